#include "main_window.h"

#include "app_settings.h"
#include "chat_model.h"
#include "chat_view.h"
#include "convert_dialog.h"
#include "convert_worker.h"
#include "document_view.h"
#include "engine_worker.h"
#include "first_run_dialog.h"
#include "heads_panel.h"
#include "memory_panel.h"
#include "placeholder_list_view.h"
#include "session_catalog.h"
#include "session_delegate.h"
#include "session_list_model.h"
#include "settings_dialog.h"
#include "theme.h"

#include <QAction>
#include <QApplication>
#include <QCloseEvent>
#include <QDir>
#include <QDragEnterEvent>
#include <QDropEvent>
#include <QFile>
#include <QFileDialog>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QInputDialog>
#include <QKeyEvent>
#include <QLabel>
#include <QListView>
#include <QLocale>
#include <QMenuBar>
#include <QMessageBox>
#include <QMimeData>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QSplitter>
#include <QStatusBar>
#include <QTabWidget>
#include <QVBoxLayout>

MainWindow::MainWindow(EngineWorker *worker, AppSettings *settings, QWidget *parent)
    : QMainWindow(parent), m_worker(worker), m_settings(settings),
      m_catalog(std::make_unique<SessionCatalog>()) {
    setWindowTitle(QStringLiteral("RecurDesk"));
    // The application icon (set in main) is inherited.
    setAcceptDrops(true);
    m_chat = new ChatModel(this);
    m_sessions = new SessionListModel(this);
    buildUi();
    buildMenus();
    connectWorker();
    updateActions();
    updateStatus();
    if (!m_settings->windowGeometry().isEmpty())
        restoreGeometry(m_settings->windowGeometry());
    else
        resize(1440, 900);
}

MainWindow::~MainWindow() = default;

// ---- construction ------------------------------------------------------------------------------

void MainWindow::buildUi() {
    // Sessions.
    auto *left = new QWidget;
    auto *lv = new QVBoxLayout(left);
    lv->setContentsMargins(8, 8, 0, 8);
    lv->setSpacing(6);
    auto *sessionsTitle = new QLabel(tr("Sessions"));
    QFont bold = sessionsTitle->font();
    bold.setBold(true);
    sessionsTitle->setFont(bold);
    auto *sessionView = new PlaceholderListView;
    sessionView->setPlaceholderText(
        tr("No sessions yet.\n\nEach document you open starts one; they are kept for next time."));
    m_sessionView = sessionView;
    m_sessionView->setModel(m_sessions);
    m_sessionView->setItemDelegate(new SessionDelegate(m_sessionView));
    m_sessionView->setEditTriggers(QAbstractItemView::EditKeyPressed);
    m_sessionView->setSelectionMode(QAbstractItemView::SingleSelection);
    m_sessionView->setContextMenuPolicy(Qt::ActionsContextMenu);
    auto *newButton = new QPushButton(tr("New Session"));
    connect(newButton, &QPushButton::clicked, this, &MainWindow::newSession);
    auto *openButton = new QPushButton(tr("Open Document…"));
    connect(openButton, &QPushButton::clicked, this, &MainWindow::openDocumentDialog);
    lv->addWidget(sessionsTitle);
    lv->addWidget(m_sessionView, 1);
    lv->addWidget(openButton);
    lv->addWidget(newButton);
    connect(m_sessionView, &QListView::activated, this,
            [this](const QModelIndex &i) { openSessionById(i.data(SessionListModel::IdRole).toLongLong()); });
    connect(m_sessionView, &QListView::clicked, this,
            [this](const QModelIndex &i) { openSessionById(i.data(SessionListModel::IdRole).toLongLong()); });
    connect(m_sessions, &SessionListModel::renameRequested, this, [this](qint64 id, const QString &name) {
        if (!m_catalog->rename(id, name)) onError(m_catalog->lastError());
    });

    // Document and panels.
    m_tabs = new QTabWidget;
    m_tabs->setDocumentMode(true);
    m_document = new DocumentView;
    connect(m_document, &DocumentView::openRequested, this, &MainWindow::openDocumentDialog);
    m_memory = new MemoryPanel;
    m_heads = new HeadsPanel;
    m_tabs->addTab(m_document, tr("Document"));
    m_tabs->addTab(m_memory, tr("Memory"));
    m_tabs->addTab(m_heads, tr("Heads"));

    // Conversation.
    auto *right = new QWidget;
    auto *rv = new QVBoxLayout(right);
    rv->setContentsMargins(0, 0, 8, 8);
    rv->setSpacing(6);
    m_chatView = new ChatView;
    m_chatView->setPlaceholderText(
        tr("Answers appear here as they are written.\n\nOpen a document, then ask about it below."));
    m_chatView->setModel(m_chat);
    connect(m_chatView, &QListView::clicked, this, &MainWindow::onChatClicked);

    m_readingBar = new QWidget;
    auto *rb = new QHBoxLayout(m_readingBar);
    rb->setContentsMargins(4, 0, 0, 0);
    m_readingLabel = new QLabel;
    m_readingProgress = new QProgressBar;
    m_readingProgress->setTextVisible(false);
    m_readingProgress->setMaximumHeight(10);
    auto *cancel = new QPushButton(tr("Cancel"));
    connect(cancel, &QPushButton::clicked, this, &MainWindow::stop);
    rb->addWidget(m_readingLabel);
    rb->addWidget(m_readingProgress, 1);
    rb->addWidget(cancel);
    m_readingBar->hide();

    m_question = new QPlainTextEdit;
    m_question->setPlaceholderText(
        tr("Ask about the document…   Enter sends, Shift+Enter starts a new line"));
    m_question->setTabChangesFocus(true);
    const QFontMetrics fm(m_question->font());
    m_question->setFixedHeight(fm.lineSpacing() * 3 + 16);
    m_question->installEventFilter(this);
    m_askButton = new QPushButton(tr("Ask"));
    m_askButton->setDefault(true);
    m_askButton->setToolTip(tr("Send the question (Enter)"));
    m_stopButton = new QPushButton(tr("Stop"));
    m_stopButton->setToolTip(tr("Stop reading or answering (Esc)"));
    connect(m_askButton, &QPushButton::clicked, this, &MainWindow::sendQuestion);
    connect(m_stopButton, &QPushButton::clicked, this, &MainWindow::stop);
    auto *buttons = new QVBoxLayout;
    buttons->addWidget(m_askButton);
    buttons->addWidget(m_stopButton);
    buttons->addStretch();
    auto *compose = new QHBoxLayout;
    compose->addWidget(m_question, 1);
    compose->addLayout(buttons);
    rv->addWidget(m_chatView, 1);
    rv->addWidget(m_readingBar);
    rv->addLayout(compose);

    m_split = new QSplitter(Qt::Horizontal);
    m_split->addWidget(left);
    m_split->addWidget(m_tabs);
    m_split->addWidget(right);
    m_split->setStretchFactor(0, 0);
    m_split->setStretchFactor(1, 5);
    m_split->setStretchFactor(2, 4);
    m_split->setSizes({250, 640, 540});
    m_split->setChildrenCollapsible(true);
    setCentralWidget(m_split);

    m_modelLabel = new QLabel;
    m_deviceLabel = new QLabel;
    m_memoryLabel = new QLabel;
    for (QLabel *l : {m_modelLabel, m_deviceLabel, m_memoryLabel}) {
        l->setContentsMargins(8, 0, 8, 0);
        statusBar()->addPermanentWidget(l);
    }
}

void MainWindow::buildMenus() {
    QMenu *file = menuBar()->addMenu(tr("&File"));
    m_openAct = file->addAction(tr("&Open Document…"), this, &MainWindow::openDocumentDialog);
    m_openAct->setShortcut(QKeySequence::Open);
    m_recentMenu = file->addMenu(tr("Open &Recent"));
    connect(m_recentMenu, &QMenu::aboutToShow, this, [this] {
        m_recentMenu->clear();
        const QStringList recent = m_settings->recentDocuments();
        for (const QString &p : recent)
            m_recentMenu->addAction(QFileInfo(p).fileName(), this, [this, p] { openDocumentFile(p); })
                ->setToolTip(p);
        if (recent.isEmpty()) m_recentMenu->addAction(tr("No recent documents"))->setEnabled(false);
    });
    m_newSessionAct = file->addAction(tr("&New Session on This Document"), this, &MainWindow::newSession);
    m_newSessionAct->setShortcut(QKeySequence::New);
    m_exportAct = file->addAction(tr("&Export Session as Markdown…"), this, &MainWindow::exportSession);
    m_exportAct->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_E));
    file->addSeparator();
    QAction *quit = file->addAction(tr("&Quit"), this, &QWidget::close);
    quit->setShortcut(QKeySequence::Quit);

    QMenu *session = menuBar()->addMenu(tr("&Session"));
    m_askAct = session->addAction(tr("&Ask"), this, &MainWindow::sendQuestion);
    m_askAct->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_Return));
    m_stopAct = session->addAction(tr("&Stop"), this, &MainWindow::stop);
    m_stopAct->setShortcut(QKeySequence(Qt::Key_Escape));
    session->addSeparator();
    m_renameAct = session->addAction(tr("&Rename…"), this, &MainWindow::renameSession);
    m_renameAct->setShortcut(QKeySequence(Qt::Key_F2));
    m_deleteAct = session->addAction(tr("&Delete"), this, &MainWindow::deleteSession);
    m_deleteAct->setShortcut(QKeySequence::Delete);
    m_deleteAct->setShortcutContext(Qt::WidgetWithChildrenShortcut);
    m_sessionView->addAction(m_renameAct);
    m_sessionView->addAction(m_deleteAct);
    m_sessionView->addAction(m_exportAct);
    QAction *focus = session->addAction(tr("Focus the &Question"), this, [this] { m_question->setFocus(); });
    focus->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_L));

    QMenu *view = menuBar()->addMenu(tr("&View"));
    view->addAction(tr("&Document"), this, [this] { showPanel(Panel::Document); })
        ->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_1));
    view->addAction(tr("&Memory"), this, [this] { showPanel(Panel::Memory); })
        ->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_2));
    view->addAction(tr("&Heads"), this, [this] { showPanel(Panel::Heads); })
        ->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_3));
    QAction *toggle = view->addAction(tr("Show &Sessions"));
    toggle->setCheckable(true);
    toggle->setChecked(true);
    toggle->setShortcut(QKeySequence(Qt::Key_F9));
    connect(toggle, &QAction::toggled, this, [this](bool on) { m_split->widget(0)->setVisible(on); });

    QMenu *settings = menuBar()->addMenu(tr("S&ettings"));
    settings->addAction(tr("&Preferences…"), this, &MainWindow::showPreferences)
        ->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_Comma));
    m_convertAct = settings->addAction(tr("Make a &Hybrid Model…"), this, &MainWindow::showConvertDialog);
    m_convertAct->setStatusTip(tr("Replace recency-aware attention heads of the model with fixed-memory heads"));

    QMenu *help = menuBar()->addMenu(tr("&Help"));
    help->addAction(tr("&Keyboard Shortcuts"), this, &MainWindow::showShortcuts)
        ->setShortcut(QKeySequence::HelpContents);
    help->addAction(tr("&About RecurDesk"), this, &MainWindow::showAbout);
}

void MainWindow::connectWorker() {
    // Requests: queued, they run on the worker's thread in the order sent.
    connect(this, &MainWindow::openStoreRequested, m_worker, &EngineWorker::openStore, Qt::QueuedConnection);
    connect(this, &MainWindow::loadModelRequested, m_worker, &EngineWorker::loadModel, Qt::QueuedConnection);
    connect(this, &MainWindow::openDocumentRequested, m_worker, &EngineWorker::openDocument,
            Qt::QueuedConnection);
    connect(this, &MainWindow::openSessionRequested, m_worker, &EngineWorker::openSession,
            Qt::QueuedConnection);
    connect(this, &MainWindow::askRequested, m_worker, &EngineWorker::ask, Qt::QueuedConnection);
    // Results.
    connect(m_worker, &EngineWorker::modelLoaded, this, &MainWindow::onModelLoaded);
    connect(m_worker, &EngineWorker::busyChanged, this, &MainWindow::onBusyChanged);
    connect(m_worker, &EngineWorker::documentOpened, this, &MainWindow::onDocumentOpened);
    connect(m_worker, &EngineWorker::importFailed, this, &MainWindow::onImportFailed);
    connect(m_worker, &EngineWorker::memoryPlanned, this, &MainWindow::onMemoryPlanned);
    connect(m_worker, &EngineWorker::progress, this, &MainWindow::onProgress);
    connect(m_worker, &EngineWorker::memoryChanged, this, &MainWindow::onMemoryChanged);
    connect(m_worker, &EngineWorker::headStatsChanged, m_heads, &HeadsPanel::setStats);
    connect(m_worker, &EngineWorker::token, this, &MainWindow::onToken);
    connect(m_worker, &EngineWorker::answerFinished, this, &MainWindow::onAnswerFinished);
    connect(m_worker, &EngineWorker::errorOccurred, this, &MainWindow::onError);
}

// ---- start-up ----------------------------------------------------------------------------------

void MainWindow::start(const QString &databasePath, bool interactive) {
    QString db = databasePath.isEmpty() ? SessionCatalog::defaultPath() : databasePath;
    SessionCatalog::OpenResult r = m_catalog->open(db);
    if (r == SessionCatalog::OpenResult::Corrupt) {
        const QString msg =
            tr("The session database %1 is damaged:\n%2\n\nMove it aside and start a new one? "
               "(The old file is kept next to it.)")
                .arg(db, m_catalog->lastError());
        if (!interactive ||
            QMessageBox::question(this, tr("Damaged Session Database"), msg) == QMessageBox::Yes) {
            const QString moved = SessionCatalog::moveAside(db);
            if (!moved.isEmpty()) {
                statusBar()->showMessage(tr("Damaged database moved to %1").arg(moved), 10000);
                r = m_catalog->open(db);
            }
        }
    }
    if (r != SessionCatalog::OpenResult::Ok) {
        if (interactive)
            QMessageBox::warning(
                this, tr("Session Database"),
                tr("Sessions cannot be kept: %1\nAnswers will still work, but are not saved.")
                    .arg(m_catalog->lastError()));
        // A private database in a temporary place still lets the pipeline run.
        db = QDir::temp().filePath(QStringLiteral("recurdesk-%1.db").arg(QCoreApplication::applicationPid()));
        m_catalog->open(db);
    }
    emit openStoreRequested(db);
    refreshSessions();
    loadModelFromSettings(interactive);
}

void MainWindow::loadModelFromSettings(bool interactive) {
    EngineConfig cfg = m_settings->engineConfig();
    if (cfg.modelPath.isEmpty() && interactive) {
        FirstRunDialog dlg(AppSettings::defaultModelPath(), this);
        if (dlg.exec() == QDialog::Accepted && !dlg.modelPath().isEmpty()) {
            m_settings->setModelPath(dlg.modelPath());
            cfg.modelPath = dlg.modelPath();
        }
    }
    if (cfg.modelPath.isEmpty()) {
        m_chat->addNotice(tr("No model is loaded. Choose one in Settings ▸ Preferences (Ctrl+,), or run "
                             "installer/setup.sh to install the default model."));
        updateStatus();
        return;
    }
    m_modelLabel->setText(tr("Loading %1…").arg(QFileInfo(cfg.modelPath).fileName()));
    emit loadModelRequested(cfg, m_settings->sampling());
}

// ---- worker results ----------------------------------------------------------------------------

void MainWindow::onModelLoaded(const ModelInfo &info) {
    m_model = info;
    m_modelReady = true;
    updateStatus();
    updateActions();
    // auto's fallback to the CPU is said once, here; the device label keeps the outcome.
    if (info.deviceNotice.isEmpty())
        statusBar()->showMessage(tr("Model ready: %1").arg(info.name), 5000);
    else
        statusBar()->showMessage(tr("Model ready: %1 (%2)").arg(info.name, info.deviceNotice), 15000);
}

void MainWindow::onBusyChanged(bool busy, const QString &what) {
    m_busy = busy;
    m_busyWhat = busy ? what : QString();
    if (!busy && what == QLatin1String("ask")) {
        showReading(false);
        m_answering = false;
    }
    if (busy && what == QLatin1String("load")) statusBar()->showMessage(tr("Loading the model…"));
    if (busy && what == QLatin1String("open")) statusBar()->showMessage(tr("Opening the document…"));
    if (!busy && (what == QLatin1String("load") || what == QLatin1String("open")))
        statusBar()->clearMessage();
    updateActions();
}

void MainWindow::onDocumentOpened(const DocumentInfo &doc) {
    const bool sameSession = doc.sessionId == m_session && m_document->hasDocument();
    m_session = doc.sessionId;
    m_documentPath = doc.path;
    if (!sameSession) {
        m_document->setDocument(doc);
        m_planNoticeShown = false;
        showSession(doc.sessionId);
    }
    if (!doc.path.isEmpty() && QFileInfo::exists(doc.path)) m_settings->addRecentDocument(doc.path);
    refreshSessions();
    for (const QString &w : doc.warnings)
        m_chat->addNotice(w);
    setWindowTitle(tr("%1 — RecurDesk").arg(doc.title));
    updateActions();
    m_question->setFocus();
    emit documentShown();
}

void MainWindow::onImportFailed(const QString &path, const QString &message, bool canRepair) {
    if (canRepair) {
        QMessageBox box(QMessageBox::Warning, tr("Not a UTF-8 Text"), message, QMessageBox::NoButton, this);
        box.setInformativeText(tr("Open it anyway, with each unreadable character replaced by \uFFFD?"));
        QPushButton *anyway = box.addButton(tr("Open Anyway"), QMessageBox::AcceptRole);
        box.addButton(QMessageBox::Cancel);
        box.exec();
        if (box.clickedButton() == anyway) emit openDocumentRequested(path, false, true);
        return;
    }
    QMessageBox::warning(this, tr("Cannot Open Document"), message);
}

void MainWindow::onMemoryPlanned(const MemoryPlan &plan) {
    m_memory->setPlan(plan);
    const QLocale loc;
    m_document->setPlanSummary(
        plan.wholeDocument
            ? tr("%1 tokens, fits the context").arg(loc.toString(plan.documentTokens))
            : tr("%1 tokens, %2% fit the context")
                  .arg(loc.toString(plan.documentTokens))
                  .arg(plan.fractionInContext * 100, 0, 'f', plan.fractionInContext < 0.1 ? 1 : 0));
    if (!m_planNoticeShown && m_chat->rowCount() == 0) {
        m_planNoticeShown = true;
        if (plan.wholeDocument)
            m_chat->addNotice(
                tr("The document (%1 tokens) fits the context of %2 tokens. It is read with your first "
                   "question; later questions reuse it.")
                    .arg(loc.toString(plan.documentTokens), loc.toString(plan.contextLength)));
        else
            m_chat->addNotice(
                tr("This document has %1 tokens and the context holds %2, so about %3% of it fits. "
                   "For each question the most relevant passages are read, and the answer says which.")
                    .arg(loc.toString(plan.documentTokens), loc.toString(plan.contextLength))
                    .arg(plan.fractionInContext * 100, 0, 'f', plan.fractionInContext < 0.1 ? 1 : 0));
    }
}

void MainWindow::onProgress(qint64 done, qint64 total) {
    if (!m_answering || m_gotToken) return;
    showReading(true);
    const QLocale loc;
    m_readingLabel->setText(tr("Reading… %1 of %2 tokens").arg(loc.toString(done), loc.toString(total)));
    m_readingProgress->setRange(0, int(std::min<qint64>(total, 1 << 30)));
    m_readingProgress->setValue(int(std::min<qint64>(done, 1 << 30)));
}

void MainWindow::onMemoryChanged(const MemorySample &sample) {
    m_lastMemory = sample;
    m_memory->addSample(sample);
    updateStatus();
}

void MainWindow::onToken(const QString &text) {
    if (!m_gotToken) {
        m_gotToken = true;
        showReading(false);
    }
    m_chat->appendToAnswer(text);
}

void MainWindow::onAnswerFinished(const AnswerStats &stats) {
    m_chat->finishAnswer(stats);
    m_answering = false;
    showReading(false);
    if (!stats.passages.isEmpty()) m_document->highlightPassages(stats.passages);
    for (const QString &w : stats.warnings)
        statusBar()->showMessage(w, 8000);
    const QLocale loc;
    if (stats.generatedTokens > 0)
        statusBar()->showMessage(tr("Answered: %1 tokens at %2 tok/s")
                                     .arg(loc.toString(stats.generatedTokens))
                                     .arg(stats.decodeTokPerSec, 0, 'f', 1),
                                 8000);
    refreshSessions();
    updateActions();
    emit answerShown();
}

void MainWindow::onError(const QString &message) {
    if (m_answering && m_chat->streamingRow() >= 0) {
        AnswerStats s;
        s.stopReason = QStringLiteral("error");
        m_chat->finishAnswer(s);
    }
    if (m_busyWhat == QLatin1String("load")) {
        m_modelReady = false;
        m_modelLabel->setText(tr("No model"));
        m_chat->addError(tr("The model could not be loaded: %1").arg(message));
    } else {
        m_chat->addError(message);
    }
    statusBar()->showMessage(message, 10000);
    updateActions();
}

// ---- user actions ------------------------------------------------------------------------------

void MainWindow::openDocumentDialog() {
    const QStringList recent = m_settings->recentDocuments();
    const QString dir = recent.isEmpty() ? QDir::homePath() : QFileInfo(recent.first()).absolutePath();
    const QString path = QFileDialog::getOpenFileName(
        this, tr("Open Document"), dir, tr("Documents (*.txt *.md *.markdown *.pdf);;All files (*)"));
    if (!path.isEmpty()) openDocumentFile(path);
}

void MainWindow::openDocumentFile(const QString &path) {
    if (!m_modelReady) {
        QMessageBox::information(
            this, tr("No Model"),
            tr("A model is needed to read documents. Choose one in Settings ▸ Preferences."));
        return;
    }
    emit openDocumentRequested(QFileInfo(path).absoluteFilePath(), false, false);
}

void MainWindow::openSessionById(qint64 id) {
    if (id <= 0 || (id == m_session && m_document->hasDocument())) return;
    if (m_answering) {
        statusBar()->showMessage(tr("Stop the answer first (Esc) to switch sessions."), 5000);
        m_sessionView->setCurrentIndex(m_sessions->indexOf(m_session));
        return;
    }
    m_session = id;
    m_document->clear();
    showSession(id); // the stored conversation shows at once
    if (m_modelReady) emit openSessionRequested(id);
    updateActions();
}

void MainWindow::showSession(qint64 id) {
    m_chat->setMessages(m_catalog->messages(id));
    m_heads->setStats(m_catalog->headStats(id, m_model));
    m_memory->clear();
    m_memory->setHistory(m_catalog->memorySamples(id));
    m_sessionView->setCurrentIndex(m_sessions->indexOf(id));
}

void MainWindow::newSession() {
    if (m_documentPath.isEmpty()) {
        openDocumentDialog();
        return;
    }
    m_session = 0;
    emit openDocumentRequested(m_documentPath, true, false);
}

void MainWindow::askQuestion(const QString &question) {
    const QString q = question.trimmed();
    if (q.isEmpty()) return;
    if (!m_modelReady) {
        m_chat->addError(tr("No model is loaded."));
        return;
    }
    if (m_session <= 0) {
        m_chat->addNotice(tr("Open a document first (Ctrl+O): questions are answered from it."));
        return;
    }
    m_chat->addUserMessage(q);
    m_chat->beginAnswer();
    m_answering = true;
    m_gotToken = false;
    m_chatView->scrollToEnd();
    emit askRequested(m_session, q);
    updateActions();
}

void MainWindow::sendQuestion() {
    if (m_answering) return;
    const QString q = m_question->toPlainText();
    if (q.trimmed().isEmpty()) return;
    m_question->clear();
    askQuestion(q);
}

void MainWindow::stop() {
    m_worker->cancel();
}

void MainWindow::showPanel(Panel panel) {
    m_tabs->setCurrentIndex(int(panel));
}

void MainWindow::showPreferences() {
    EngineConfig cfg = m_settings->engineConfig();
    SettingsDialog dlg(cfg, m_settings->sampling(), m_settings->theme(), this);
    if (dlg.exec() != QDialog::Accepted) return;
    const EngineConfig next = dlg.engineConfig();
    const SamplingConfig sampling = dlg.sampling();
    m_settings->setEngineConfig(next);
    m_settings->setSampling(sampling);
    m_settings->setTheme(dlg.theme());
    applyTheme();
    if (!next.modelPath.isEmpty() && !QFileInfo(next.modelPath).isFile()) {
        QMessageBox::warning(this, tr("Model"), tr("%1 is not a file.").arg(next.modelPath));
        return;
    }
    if (m_answering) stop();
    loadModelFromSettings(false);
}

void MainWindow::showConvertDialog() {
    const QString modelPath = m_settings->engineConfig().modelPath;
    if (modelPath.isEmpty()) {
        QMessageBox::information(this, tr("Make a Hybrid Model"),
                                 tr("Choose a model first (Settings ▸ Preferences): the hybrid is made from it."));
        return;
    }
    if (m_model.hybrid && m_model.path == modelPath) {
        QMessageBox::information(this, tr("Make a Hybrid Model"),
                                 tr("%1 is already a hybrid. Choose the original model in Settings ▸ Preferences "
                                    "to make another.")
                                     .arg(QFileInfo(modelPath).fileName()));
        return;
    }
    // A dialog for another model than the one in use now is replaced, unless it is converting.
    if (m_convertDialog && !m_convertDialog->isRunning() && m_convertDialog->request().modelPath != modelPath) {
        delete m_convertDialog;
        m_convertDialog = nullptr;
    }
    if (!m_convertDialog) {
        if (!m_convertHost) m_convertHost = std::make_unique<ConvertHost>();
        m_convertDialog = new ConvertDialog(m_convertHost->worker(), modelPath, m_documentPath, this);
        connect(m_convertDialog, &ConvertDialog::useModelRequested, this, [this](const QString &path) {
            m_settings->setModelPath(path);
            if (m_answering) stop();
            loadModelFromSettings(false);
        });
    }
    if (m_convertDialog->request().calibrationPath.isEmpty() && !m_documentPath.isEmpty())
        m_convertDialog->setCalibrationPath(m_documentPath);
    m_convertDialog->show();
    m_convertDialog->raise();
    m_convertDialog->activateWindow();
}

void MainWindow::renameSession() {
    const QModelIndex i = m_sessions->indexOf(m_session);
    if (!i.isValid()) return;
    bool ok = false;
    const QString name = QInputDialog::getText(this, tr("Rename Session"), tr("Name:"), QLineEdit::Normal,
                                               i.data(Qt::DisplayRole).toString(), &ok);
    if (ok) m_sessions->setData(i, name);
}

void MainWindow::deleteSession() {
    if (m_session <= 0 || m_answering) return;
    const QModelIndex i = m_sessions->indexOf(m_session);
    const QString name = i.data(Qt::DisplayRole).toString();
    if (QMessageBox::question(
            this, tr("Delete Session"),
            tr("Delete the session “%1” with its messages? The document stays available.").arg(name)) !=
        QMessageBox::Yes)
        return;
    if (!m_catalog->remove(m_session)) {
        onError(m_catalog->lastError());
        return;
    }
    m_sessions->removeSession(m_session);
    m_session = 0;
    m_documentPath.clear();
    m_chat->clear();
    m_document->clear();
    m_memory->clear();
    m_heads->clear();
    setWindowTitle(QStringLiteral("RecurDesk"));
    updateActions();
}

void MainWindow::exportSession() {
    if (m_session <= 0) return;
    const QString md = m_catalog->exportMarkdown(m_session);
    if (md.isEmpty()) {
        onError(m_catalog->lastError());
        return;
    }
    QString name = m_sessions->indexOf(m_session).data(Qt::DisplayRole).toString();
    name.replace(QRegularExpression(QStringLiteral("[^\\w\\- ]+")), QStringLiteral("_"));
    const QString path = QFileDialog::getSaveFileName(this, tr("Export Session"),
                                                      QDir::home().filePath(name + QStringLiteral(".md")),
                                                      tr("Markdown (*.md)"));
    if (path.isEmpty()) return;
    QFile f(path);
    if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate) || f.write(md.toUtf8()) < 0)
        QMessageBox::warning(this, tr("Export"), tr("Could not write %1.").arg(path));
    else
        statusBar()->showMessage(tr("Exported to %1").arg(path), 5000);
}

void MainWindow::showShortcuts() {
    QMessageBox::information(this, tr("Keyboard Shortcuts"),
                             tr("<table cellpadding=3>"
                                "<tr><td><b>Ctrl+O</b></td><td>Open a document</td></tr>"
                                "<tr><td><b>Ctrl+N</b></td><td>New session on this document</td></tr>"
                                "<tr><td><b>Enter</b> / <b>Ctrl+Enter</b></td><td>Ask</td></tr>"
                                "<tr><td><b>Shift+Enter</b></td><td>New line in the question</td></tr>"
                                "<tr><td><b>Esc</b></td><td>Stop reading or answering</td></tr>"
                                "<tr><td><b>Ctrl+L</b></td><td>Focus the question</td></tr>"
                                "<tr><td><b>Ctrl+1 / 2 / 3</b></td><td>Document, Memory, Heads</td></tr>"
                                "<tr><td><b>F2</b> / <b>Del</b></td><td>Rename / delete the session</td></tr>"
                                "<tr><td><b>Ctrl+E</b></td><td>Export the session as Markdown</td></tr>"
                                "<tr><td><b>F9</b></td><td>Show or hide the sessions</td></tr>"
                                "<tr><td><b>Ctrl+,</b></td><td>Preferences</td></tr>"
                                "</table>"));
}

void MainWindow::showAbout() {
    QMessageBox box(this);
    box.setWindowTitle(tr("About RecurDesk"));
    box.setIconPixmap(QPixmap(QStringLiteral(":/icons/recurdesk.png"))
                          .scaled(96, 96, Qt::KeepAspectRatio, Qt::SmoothTransformation));
    box.setText(tr("<h3>RecurDesk %1</h3><p>A desktop assistant for long documents, with its own inference "
                   "engine: it shows where the memory goes and what each attention head looks at.</p>")
                    .arg(QCoreApplication::applicationVersion()));
    box.exec();
}

void MainWindow::onChatClicked(const QModelIndex &index) {
    const QVariantList ps = index.data(ChatModel::PassagesRole).toList();
    if (ps.isEmpty()) return;
    QVector<PassageRef> refs;
    for (const QVariant &v : ps) {
        const QVariantMap m = v.toMap();
        refs.push_back({m.value(QStringLiteral("ordinal")).toInt(),
                        m.value(QStringLiteral("begin")).toLongLong(),
                        m.value(QStringLiteral("end")).toLongLong()});
    }
    showPanel(Panel::Document);
    m_document->highlightPassages(refs);
}

// ---- state -------------------------------------------------------------------------------------

void MainWindow::refreshSessions() {
    const qint64 current = m_session;
    m_sessions->setSessions(m_catalog->sessions());
    if (current > 0) m_sessionView->setCurrentIndex(m_sessions->indexOf(current));
}

void MainWindow::updateActions() {
    const bool haveSession = m_session > 0;
    m_askButton->setEnabled(m_modelReady && haveSession && !m_answering);
    m_askAct->setEnabled(m_askButton->isEnabled());
    m_stopButton->setEnabled(m_answering || (m_busy && m_busyWhat == QLatin1String("ask")));
    m_stopAct->setEnabled(m_stopButton->isEnabled());
    m_renameAct->setEnabled(haveSession);
    m_deleteAct->setEnabled(haveSession && !m_answering);
    m_exportAct->setEnabled(haveSession);
    m_newSessionAct->setEnabled(m_modelReady && !m_documentPath.isEmpty() && !m_answering);
    m_openAct->setEnabled(!m_answering);
}

void MainWindow::updateStatus() {
    if (m_modelReady) {
        // The file name is what the user chose and recognises; general.name is often a build tag.
        m_modelLabel->setText(tr("Model: %1").arg(QFileInfo(m_model.path).completeBaseName()));
        m_modelLabel->setToolTip(tr("%1 (%7)\n%2 layers, %3 heads (%4 KV), context %5 tokens%6")
                                     .arg(m_model.path)
                                     .arg(m_model.nLayer)
                                     .arg(m_model.nHead)
                                     .arg(m_model.nHeadKv)
                                     .arg(m_model.contextLength)
                                     .arg(m_model.hybrid
                                              ? tr(", hybrid: %1 groups replaced").arg(m_model.replacedGroups)
                                              : QString(),
                                          m_model.name));
        if (m_model.device == QLatin1String("cuda"))
            m_deviceLabel->setText(tr("Device: CUDA · %1").arg(m_model.deviceName));
        else
            m_deviceLabel->setText(
                tr("Device: %1 · %2 threads").arg(m_model.device.toUpper()).arg(m_model.threads));
        m_deviceLabel->setToolTip(m_model.deviceNotice);
    } else if (m_modelLabel->text().isEmpty()) {
        m_modelLabel->setText(tr("No model"));
        m_deviceLabel->clear();
    }
    if (m_lastMemory.weightsBytes > 0 || m_lastMemory.kvAllocatedBytes > 0) {
        m_memoryLabel->setText(tr("Memory: weights %1 · KV %2 of %3")
                                   .arg(formatBytes(m_lastMemory.weightsBytes),
                                        formatBytes(m_lastMemory.kvUsedBytes),
                                        formatBytes(m_lastMemory.kvAllocatedBytes)));
    }
}

QString MainWindow::statusText() const {
    return QStringList{m_modelLabel->text(), m_deviceLabel->text(), m_memoryLabel->text()}.join(
        QStringLiteral(" | "));
}

void MainWindow::showReading(bool on) {
    if (on == m_readingBar->isVisible()) return;
    m_readingBar->setVisible(on);
}

void MainWindow::applyTheme() {
    Theme::apply(m_settings->theme());
    refreshTheme();
}

void MainWindow::refreshTheme() {
    m_memory->applyTheme();
    m_heads->applyTheme();
    m_chatView->viewport()->update();
}

// ---- events ------------------------------------------------------------------------------------

void MainWindow::closeEvent(QCloseEvent *event) {
    m_settings->setWindowGeometry(saveGeometry(), saveState());
    m_settings->sync();
    m_worker->cancel(); // a running answer ends now; EngineHost then stops the thread
    QMainWindow::closeEvent(event);
}

void MainWindow::changeEvent(QEvent *event) {
    // The desktop switched between light and dark (a platform theme that tells Qt).
    if (event->type() == QEvent::ThemeChange && m_settings->theme() == QLatin1String("system")) {
        const bool wasDark = Theme::isDark();
        if (Theme::apply(QStringLiteral("system")) != wasDark) refreshTheme();
    }
    QMainWindow::changeEvent(event);
}

void MainWindow::dragEnterEvent(QDragEnterEvent *event) {
    if (event->mimeData()->hasUrls()) {
        for (const QUrl &u : event->mimeData()->urls())
            if (u.isLocalFile()) {
                event->acceptProposedAction();
                return;
            }
    }
}

void MainWindow::dropEvent(QDropEvent *event) {
    for (const QUrl &u : event->mimeData()->urls())
        if (u.isLocalFile()) {
            openDocumentFile(u.toLocalFile());
            event->acceptProposedAction();
            return;
        }
}

bool MainWindow::eventFilter(QObject *watched, QEvent *event) {
    // In the question box, Enter sends and Shift+Enter is a new line.
    if (watched == m_question && event->type() == QEvent::KeyPress) {
        auto *k = static_cast<QKeyEvent *>(event);
        if ((k->key() == Qt::Key_Return || k->key() == Qt::Key_Enter) &&
            !(k->modifiers() & Qt::ShiftModifier)) {
            sendQuestion();
            return true;
        }
    }
    return QMainWindow::eventFilter(watched, event);
}
