#pragma once
// `recurdesk --screenshots DIR`: drives the real window through its main states with the real
// model and writes one PNG per state (docs/screenshots/ in the repository):
//   01-empty-window.png        before any document
//   02a-reading.png            the memory chart growing while passages are read
//   02-answer-streaming.png    a follow-up streaming, the first answer's passages marked
//   03-memory-panel.png        the memory panel after the answer
//   04-heads-panel.png         the heads heatmap with a head selected
//   05-dark.png                the dark palette
// It uses a temporary session database and settings file, so the user's sessions are untouched.
#include <QString>

class MainWindow;
class AppSettings;

struct ScreenshotOptions {
    QString directory;
    QString document; // the file read (default: ../shared/data/prideprejudice.txt if present)
    QString question;
    QString followUp;
    QString database;          // temporary when empty
    int tokensBeforeShot = 24; // answer pieces streamed before the "streaming" picture
    int timeoutSeconds = 600;
};

// Returns the process exit code (0: every picture written).
int runScreenshots(MainWindow &window, const ScreenshotOptions &options);
