#pragma once
// The main window: sessions on the left; the document, memory and heads panels in the middle;
// the conversation with its question box on the right; model, device and memory in the status
// bar. It reaches the engine only through EngineWorker: requests leave as this window's signals
// (connected, queued, to the worker's slots), results come back through the worker's signals.
// Stored sessions are read through its own SessionCatalog connection, so reopening one shows the
// conversation at once.
#include "engine_types.h"

#include <QMainWindow>

#include <memory>

class EngineWorker;
class ConvertHost;
class ConvertDialog;
class AppSettings;
class SessionCatalog;
class ChatModel;
class ChatView;
class SessionListModel;
class DocumentView;
class MemoryPanel;
class HeadsPanel;
class QListView;
class QTabWidget;
class QPlainTextEdit;
class QPushButton;
class QProgressBar;
class QLabel;
class QMenu;
class QSplitter;
class QAction;

class MainWindow : public QMainWindow {
    Q_OBJECT
  public:
    enum class Panel { Document = 0, Memory = 1, Heads = 2 };

    // `worker` lives on its own thread (EngineHost); `settings` outlives the window.
    MainWindow(EngineWorker *worker, AppSettings *settings, QWidget *parent = nullptr);
    ~MainWindow() override;

    // Opens the session database (default: SessionCatalog::defaultPath()) here and in the
    // worker, lists the sessions, and loads the model — or shows the first-run dialog when
    // there is none (interactive = false: never show a dialog; for tests and screenshots).
    void start(const QString &databasePath = QString(), bool interactive = true);

    bool isBusy() const { return m_busy; }
    bool isModelReady() const { return m_modelReady; }
    const ModelInfo &modelInfo() const { return m_model; }
    qint64 currentSession() const { return m_session; }
    ChatModel *chatModel() const { return m_chat; }
    SessionListModel *sessionModel() const { return m_sessions; }
    MemoryPanel *memoryPanel() const { return m_memory; }
    HeadsPanel *headsPanel() const { return m_heads; }
    DocumentView *documentView() const { return m_document; }
    QString statusText() const;
    // The "Make a Hybrid Model" dialog, made on first use (null before).
    ConvertDialog *convertDialog() const { return m_convertDialog; }

  public slots:
    void openDocumentFile(const QString &path);
    void openSessionById(qint64 id);
    void askQuestion(const QString &question);
    void stop();
    void showPanel(MainWindow::Panel panel);
    void newSession();
    // Opens "Make a Hybrid Model" for the model in use (its conversion runs on a thread of its own).
    void showConvertDialog();
    // Applies the theme in the settings, then refreshTheme().
    void applyTheme();
    // Re-reads the current palette and Theme::colors() into the charts and custom views.
    void refreshTheme();

  signals:
    // Requests to the worker (queued connections).
    void openStoreRequested(const QString &databasePath);
    void loadModelRequested(const EngineConfig &config, const SamplingConfig &sampling);
    void openDocumentRequested(const QString &path, bool newSession, bool repairUtf8);
    void openSessionRequested(qint64 sessionId);
    void askRequested(qint64 sessionId, const QString &question);
    // Emitted when an answer has finished and the window has shown it.
    void answerShown();
    void documentShown();

  protected:
    void closeEvent(QCloseEvent *event) override;
    void changeEvent(QEvent *event) override;
    void dragEnterEvent(QDragEnterEvent *event) override;
    void dropEvent(QDropEvent *event) override;
    bool eventFilter(QObject *watched, QEvent *event) override;

  private slots:
    void onModelLoaded(const ModelInfo &info);
    void onBusyChanged(bool busy, const QString &what);
    void onDocumentOpened(const DocumentInfo &doc);
    void onImportFailed(const QString &path, const QString &message, bool canRepair);
    void onMemoryPlanned(const MemoryPlan &plan);
    void onProgress(qint64 done, qint64 total);
    void onMemoryChanged(const MemorySample &sample);
    void onToken(const QString &text);
    void onAnswerFinished(const AnswerStats &stats);
    void onError(const QString &message);
    void openDocumentDialog();
    void sendQuestion();
    void showPreferences();
    void renameSession();
    void deleteSession();
    void exportSession();
    void showShortcuts();
    void showAbout();
    void onChatClicked(const QModelIndex &index);

  private:
    void buildUi();
    void buildMenus();
    void connectWorker();
    void loadModelFromSettings(bool interactive);
    void refreshSessions();
    void showSession(qint64 id);
    void updateActions();
    void updateStatus();
    void showReading(bool on);

    EngineWorker *m_worker;
    AppSettings *m_settings;
    std::unique_ptr<SessionCatalog> m_catalog;

    ChatModel *m_chat;
    SessionListModel *m_sessions;
    QListView *m_sessionView;
    ChatView *m_chatView;
    DocumentView *m_document;
    MemoryPanel *m_memory;
    HeadsPanel *m_heads;
    QTabWidget *m_tabs;
    QSplitter *m_split;
    QPlainTextEdit *m_question;
    QPushButton *m_askButton, *m_stopButton;
    QWidget *m_readingBar;
    QLabel *m_readingLabel;
    QProgressBar *m_readingProgress;
    QLabel *m_modelLabel, *m_deviceLabel, *m_memoryLabel;
    QMenu *m_recentMenu;
    QAction *m_openAct, *m_newSessionAct, *m_renameAct, *m_deleteAct, *m_exportAct, *m_stopAct, *m_askAct;
    QAction *m_convertAct;
    std::unique_ptr<ConvertHost> m_convertHost; // the conversion's thread, made on first use
    ConvertDialog *m_convertDialog = nullptr;

    ModelInfo m_model;
    MemorySample m_lastMemory;
    bool m_modelReady = false;
    bool m_busy = false;
    QString m_busyWhat;
    bool m_answering = false; // an ask is running (from sending to answerFinished)
    bool m_gotToken = false;  // the running answer has started to stream
    qint64 m_session = 0;
    QString m_documentPath;
    bool m_planNoticeShown = false;
};
