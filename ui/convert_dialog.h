#pragma once
// "Make a Hybrid Model": the default conversion (app/core/conversion.h, what `recur convert`
// runs) of the model in use, with the share of KV groups to replace, the calibration text and the
// output file to choose, live progress (phase, step, loss, time left), Stop, and "Use This Model"
// once the hybrid is written. The conversion runs on ConvertWorker's thread: the dialog only
// sends the request and shows the worker's signals, and may be closed and reopened meanwhile.
#include "engine_types.h"

#include <QDialog>

class ConvertWorker;
class QComboBox;
class QLineEdit;
class QLabel;
class QProgressBar;
class QPushButton;

class ConvertDialog : public QDialog {
    Q_OBJECT
  public:
    // modelPath: the original; calibrationPath: the text to calibrate on (e.g. the open
    // document; may be empty). The worker lives on its own thread (ConvertHost).
    ConvertDialog(ConvertWorker *worker, const QString &modelPath, const QString &calibrationPath,
                  QWidget *parent = nullptr);

    bool isRunning() const { return m_running; }
    ConvertRequest request() const; // what Start sends, from the fields
    QString outputPath() const;
    void setFraction(double fraction);        // 0.25 or 0.5 (the closest entry)
    void setCalibrationPath(const QString &path);
    void setOutputPath(const QString &path);
    void setSteps(int steps) { m_steps = steps; } // -1: the default (tests use a few)
    QString statusText() const;

    // The default output file: next to the model, NAME-hybrid-25.gguf for 25%.
    static QString defaultOutputPath(const QString &modelPath, double fraction);

  public slots:
    void start();
    void stopConversion();

  signals:
    void startRequested(const ConvertRequest &request); // queued to ConvertWorker::convert
    void useModelRequested(const QString &path);         // "Use This Model"

  private slots:
    void onStarted(const ConvertRequest &request);
    void onProgress(const ConvertProgress &progress);
    void onFinished(const ConvertSummary &summary);
    void onFailed(const QString &message, bool cancelled);

  private:
    void setRunning(bool running);

    ConvertWorker *m_worker;
    QString m_modelPath;
    int m_steps = -1;
    bool m_running = false;
    bool m_outputEdited = false; // the user chose the output: a new fraction does not rename it
    QString m_written;           // the hybrid written by the last conversion
    QComboBox *m_fraction;
    QLineEdit *m_calibration, *m_output;
    QLabel *m_status;
    QProgressBar *m_bar;
    QPushButton *m_startButton, *m_stopButton, *m_useButton, *m_closeButton;
    QPushButton *m_calibrationBrowse, *m_outputBrowse;
};
