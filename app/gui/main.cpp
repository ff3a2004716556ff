// recurdesk: the desktop app. Parses the command line, applies the theme, starts the engine's
// worker thread (EngineHost) and shows the main window; on exit the worker is stopped before
// anything it uses is destroyed.
#include "app_icon.h"
#include "app_settings.h"
#include "engine_worker.h"
#include "main_window.h"
#include "screenshots.h"
#include "theme.h"

#include <QApplication>
#include <QCommandLineParser>
#include <QDir>
#include <QFileInfo>
#include <QTimer>

#include <cstdio>
#include <memory>

int main(int argc, char **argv) {
    QApplication app(argc, argv);
    QApplication::setApplicationName(QStringLiteral("RecurDesk"));
    QApplication::setOrganizationName(QStringLiteral("RecurDesk"));
    QApplication::setApplicationVersion(QStringLiteral(RECURDESK_VERSION));
    QApplication::setDesktopFileName(QStringLiteral("io.github.recurdesk.RecurDesk"));

    QCommandLineParser cli;
    cli.setApplicationDescription(QStringLiteral("RecurDesk: ask questions about long documents."));
    cli.addHelpOption();
    cli.addVersionOption();
    cli.addPositionalArgument(QStringLiteral("document"), QStringLiteral("A .txt, .md or .pdf file to open."),
                              QStringLiteral("[document]"));
    QCommandLineOption modelOpt(QStringList{QStringLiteral("m"), QStringLiteral("model")},
                                QStringLiteral("GGUF model for this run."), QStringLiteral("file"));
    QCommandLineOption dbOpt(QStringLiteral("database"),
                             QStringLiteral("Session database (default: the user's)."),
                             QStringLiteral("file"));
    QCommandLineOption settingsOpt(QStringLiteral("settings"),
                                   QStringLiteral("Settings file (INI) instead of the user's."),
                                   QStringLiteral("file"));
    QCommandLineOption shotsOpt(QStringLiteral("screenshots"),
                                QStringLiteral("Write PNGs of the main states to DIR and exit."),
                                QStringLiteral("dir"));
    QCommandLineOption questionOpt(QStringLiteral("question"),
                                   QStringLiteral("Question asked for --screenshots."),
                                   QStringLiteral("text"));
    QCommandLineOption iconOpt(QStringLiteral("render-icon"),
                               QStringLiteral("Write the app icon as PNG (with --icon-size) and exit."),
                               QStringLiteral("file"));
    QCommandLineOption iconSizeOpt(QStringLiteral("icon-size"), QStringLiteral("Icon size in pixels."),
                                   QStringLiteral("n"), QStringLiteral("256"));
    for (const QCommandLineOption *o :
         {&modelOpt, &dbOpt, &settingsOpt, &shotsOpt, &questionOpt, &iconOpt, &iconSizeOpt})
        cli.addOption(*o);
    cli.process(app);

    if (cli.isSet(iconOpt))
        return renderAppIcon(cli.value(iconSizeOpt).toInt()).save(cli.value(iconOpt), "PNG") ? 0 : 1;

    const bool screenshots = cli.isSet(shotsOpt);
    std::unique_ptr<AppSettings> settings;
    QString tempSettings;
    if (cli.isSet(settingsOpt))
        settings = std::make_unique<AppSettings>(cli.value(settingsOpt));
    else if (screenshots) {
        // Pictures come out the same on every machine: default settings, not the user's.
        tempSettings = QDir::temp().filePath(
            QStringLiteral("recurdesk-screenshots-%1.ini").arg(QApplication::applicationPid()));
        QFile::remove(tempSettings);
        settings = std::make_unique<AppSettings>(tempSettings);
        settings->setTheme(QStringLiteral("light"));
    } else
        settings = std::make_unique<AppSettings>();
    if (cli.isSet(modelOpt)) settings->setModelOverride(QFileInfo(cli.value(modelOpt)).absoluteFilePath());

    QApplication::setWindowIcon(appIcon());
    Theme::captureSystemPalette();
    Theme::apply(settings->theme());

    EngineHost host;
    int rc = 0;
    {
        MainWindow window(host.worker(), settings.get());
        if (screenshots) {
            ScreenshotOptions o;
            o.directory = cli.value(shotsOpt);
            o.document = cli.positionalArguments().value(0);
            if (o.document.isEmpty()) {
                for (const QString &c :
                     {QStringLiteral("../shared/data/prideprejudice.txt"),
                      QStringLiteral(RECURDESK_SOURCE_DIR "/../shared/data/prideprejudice.txt")})
                    if (QFileInfo::exists(c)) {
                        o.document = QFileInfo(c).absoluteFilePath();
                        break;
                    }
            }
            o.question = cli.isSet(questionOpt)
                             ? cli.value(questionOpt)
                             : QStringLiteral("What does Mr. Darcy say about Elizabeth at the ball?");
            o.followUp = QStringLiteral("How does Elizabeth answer him?");
            o.database = cli.value(dbOpt);
            rc = runScreenshots(window, o);
        } else {
            window.show();
            window.start(cli.value(dbOpt), true);
            const QString doc = cli.positionalArguments().value(0);
            if (!doc.isEmpty()) {
                // The document opens once the model is there.
                auto *once = new QObject(&window);
                QObject::connect(host.worker(), &EngineWorker::modelLoaded, once, [&window, doc, once] {
                    window.openDocumentFile(doc);
                    once->deleteLater();
                });
            }
            rc = app.exec();
        }
        host.shutdown(); // the worker stops before the window it signals goes away
    }
    if (!tempSettings.isEmpty()) QFile::remove(tempSettings);
    return rc;
}
