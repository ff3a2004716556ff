#include "convert_dialog.h"

#include "convert_worker.h"

#include <algorithm>

#include <QComboBox>
#include <QDialogButtonBox>
#include <QDir>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QVBoxLayout>

namespace {

QString duration(double s) {
    if (s < 0) return QString();
    if (s >= 60) return QObject::tr("%1 min %2 s").arg(int(s) / 60).arg(int(s) % 60, 2, 10, QLatin1Char('0'));
    return QObject::tr("%1 s").arg(int(s + 0.5));
}

// The phases as a user reads them (ConvertProgress::phase).
QString phaseTitle(const QString &phase) {
    if (phase == QLatin1String("analysis")) return QObject::tr("Measuring each head's recency");
    if (phase == QLatin1String("capture")) return QObject::tr("Recording what the original heads do");
    if (phase == QLatin1String("train")) return QObject::tr("Training the recurrent heads");
    if (phase == QLatin1String("evaluate")) return QObject::tr("Measuring each kind of head on held-out text");
    if (phase == QLatin1String("compare")) return QObject::tr("Comparing the whole hybrid with the original");
    if (phase == QLatin1String("retrieval")) return QObject::tr("Checking passkey retrieval");
    if (phase == QLatin1String("retrieval_probe")) return QObject::tr("Probing which heads retrieval needs");
    return phase;
}

} // namespace

ConvertDialog::ConvertDialog(ConvertWorker *worker, const QString &modelPath, const QString &calibrationPath,
                             QWidget *parent)
    : QDialog(parent), m_worker(worker), m_modelPath(modelPath) {
    setWindowTitle(tr("Make a Hybrid Model"));
    auto *intro = new QLabel(
        tr("<p>Replaces the attention heads that look only at the last few tokens with heads whose memory "
           "does not grow with the document: recurrent heads trained here to imitate them, exact windows, "
           "or both, chosen per group by how closely each imitates the original. The result is checked "
           "against the original end to end and on passkey retrieval before it is written.</p>"
           "<p>This takes minutes (about 20 for SmolLM2-135M on two cores); you can keep asking questions "
           "meanwhile, more slowly.</p>"));
    intro->setWordWrap(true);
    intro->setMinimumWidth(540);

    auto *model = new QLabel(QFileInfo(modelPath).fileName());
    model->setToolTip(modelPath);
    m_fraction = new QComboBox;
    m_fraction->addItem(tr("25% of the KV groups (keeps 75% of the attention cache)"), 0.25);
    m_fraction->addItem(tr("50% of the KV groups (keeps 50% of the attention cache)"), 0.5);
    m_calibration = new QLineEdit(calibrationPath);
    m_calibration->setPlaceholderText(tr("a long text in the model's language (.txt, .md, .pdf)"));
    m_calibrationBrowse = new QPushButton(tr("Choose…"));
    m_output = new QLineEdit(defaultOutputPath(modelPath, 0.25));
    m_outputBrowse = new QPushButton(tr("Choose…"));

    auto row = [](QLineEdit *edit, QPushButton *button) {
        auto *w = new QWidget;
        auto *h = new QHBoxLayout(w);
        h->setContentsMargins(0, 0, 0, 0);
        h->addWidget(edit, 1);
        h->addWidget(button);
        return w;
    };
    auto *form = new QFormLayout;
    form->addRow(tr("Original model:"), model);
    form->addRow(tr("Replace:"), m_fraction);
    form->addRow(tr("Calibration text:"), row(m_calibration, m_calibrationBrowse));
    form->addRow(tr("Save the hybrid as:"), row(m_output, m_outputBrowse));

    m_status = new QLabel(tr("Ready."));
    m_status->setWordWrap(true);
    m_status->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_bar = new QProgressBar;
    m_bar->setRange(0, 1000);
    m_bar->setValue(0);
    m_bar->setTextVisible(false);

    auto *buttons = new QDialogButtonBox;
    m_startButton = buttons->addButton(tr("Start"), QDialogButtonBox::ActionRole);
    m_stopButton = buttons->addButton(tr("Stop"), QDialogButtonBox::ActionRole);
    m_useButton = buttons->addButton(tr("Use This Model"), QDialogButtonBox::AcceptRole);
    m_closeButton = buttons->addButton(QDialogButtonBox::Close);
    m_startButton->setDefault(true);
    m_useButton->setEnabled(false);
    m_stopButton->setEnabled(false);

    auto *v = new QVBoxLayout(this);
    v->addWidget(intro);
    v->addLayout(form);
    v->addWidget(m_bar);
    v->addWidget(m_status);
    v->addWidget(buttons);

    connect(m_fraction, &QComboBox::currentIndexChanged, this, [this] {
        if (!m_outputEdited) m_output->setText(defaultOutputPath(m_modelPath, m_fraction->currentData().toDouble()));
    });
    connect(m_output, &QLineEdit::textEdited, this, [this] { m_outputEdited = true; });
    connect(m_calibrationBrowse, &QPushButton::clicked, this, [this] {
        const QString f = QFileDialog::getOpenFileName(this, tr("Calibration Text"), m_calibration->text(),
                                                       tr("Documents (*.txt *.md *.pdf);;All files (*)"));
        if (!f.isEmpty()) m_calibration->setText(f);
    });
    connect(m_outputBrowse, &QPushButton::clicked, this, [this] {
        const QString f = QFileDialog::getSaveFileName(this, tr("Save the Hybrid As"), m_output->text(),
                                                       tr("GGUF models (*.gguf)"));
        if (f.isEmpty()) return;
        m_output->setText(f);
        m_outputEdited = true;
    });
    connect(m_startButton, &QPushButton::clicked, this, &ConvertDialog::start);
    connect(m_stopButton, &QPushButton::clicked, this, &ConvertDialog::stopConversion);
    connect(m_useButton, &QPushButton::clicked, this, [this] {
        emit useModelRequested(m_written);
        accept();
    });
    connect(m_closeButton, &QPushButton::clicked, this, &QDialog::reject);

    if (m_worker) {
        connect(this, &ConvertDialog::startRequested, m_worker, &ConvertWorker::convert, Qt::QueuedConnection);
        connect(m_worker, &ConvertWorker::started, this, &ConvertDialog::onStarted);
        connect(m_worker, &ConvertWorker::progress, this, &ConvertDialog::onProgress);
        connect(m_worker, &ConvertWorker::finished, this, &ConvertDialog::onFinished);
        connect(m_worker, &ConvertWorker::failed, this, &ConvertDialog::onFailed);
    }
}

QString ConvertDialog::defaultOutputPath(const QString &modelPath, double fraction) {
    const QFileInfo fi(modelPath);
    const QString name = fi.completeBaseName().isEmpty() ? QStringLiteral("model") : fi.completeBaseName();
    const QString dir = fi.absolutePath().isEmpty() ? QDir::homePath() : fi.absolutePath();
    return QDir(dir).filePath(QStringLiteral("%1-hybrid-%2.gguf").arg(name).arg(int(fraction * 100 + 0.5)));
}

ConvertRequest ConvertDialog::request() const {
    ConvertRequest r;
    r.modelPath = m_modelPath;
    r.calibrationPath = m_calibration->text().trimmed();
    r.fraction = m_fraction->currentData().toDouble();
    r.outputPath = m_output->text().trimmed();
    r.steps = m_steps;
    return r;
}

QString ConvertDialog::outputPath() const { return m_output->text().trimmed(); }
QString ConvertDialog::statusText() const { return m_status->text(); }

void ConvertDialog::setFraction(double fraction) { m_fraction->setCurrentIndex(fraction > 0.375 ? 1 : 0); }
void ConvertDialog::setCalibrationPath(const QString &path) { m_calibration->setText(path); }
void ConvertDialog::setOutputPath(const QString &path) {
    m_output->setText(path);
    m_outputEdited = true;
}

void ConvertDialog::start() {
    if (m_running) return;
    const ConvertRequest r = request();
    if (r.calibrationPath.isEmpty()) {
        m_status->setText(tr("Choose a calibration text first: a long document in the model's language."));
        return;
    }
    if (r.outputPath.isEmpty()) {
        m_status->setText(tr("Choose where to save the hybrid model."));
        return;
    }
    if (QFileInfo::exists(r.outputPath) && !m_outputEdited && m_written != r.outputPath) {
        // Never replace a file silently: the default name is taken, so say so and let the user pick.
        m_status->setText(tr("%1 exists already; choose another file name or remove it.").arg(r.outputPath));
        return;
    }
    m_useButton->setEnabled(false);
    m_written.clear();
    setRunning(true);
    m_bar->setValue(0);
    m_status->setText(tr("Starting…"));
    emit startRequested(r);
}

void ConvertDialog::stopConversion() {
    if (!m_running || !m_worker) return;
    m_worker->cancel();
    m_status->setText(tr("Stopping…"));
}

void ConvertDialog::setRunning(bool running) {
    m_running = running;
    m_startButton->setEnabled(!running);
    m_stopButton->setEnabled(running);
    for (QWidget *w : {static_cast<QWidget *>(m_fraction), static_cast<QWidget *>(m_calibration),
                       static_cast<QWidget *>(m_output), static_cast<QWidget *>(m_calibrationBrowse),
                       static_cast<QWidget *>(m_outputBrowse)})
        w->setEnabled(!running);
}

void ConvertDialog::onStarted(const ConvertRequest &) {
    setRunning(true);
}

void ConvertDialog::onProgress(const ConvertProgress &p) {
    if (p.total > 0) m_bar->setValue(int(1000.0 * double(p.done) / double(p.total)));
    // The bar restarts with every phase: the stage number says the conversion as a whole is moving
    // on, and how far it has to go.
    QString line = tr("Stage %1 of %2 · %3").arg(p.stage).arg(std::max(p.stages, p.stage)).arg(phaseTitle(p.phase));
    if (p.phase == QLatin1String("train")) line += tr(": step %1 of %2").arg(p.done).arg(p.total);
    else if (p.total > 0) line += tr(": %1 of %2 tokens").arg(p.done).arg(p.total);
    if (p.loss >= 0) line += tr(", relative error %1").arg(p.loss, 0, 'f', 4);
    if (p.etaSeconds > 0 && p.done < p.total) line += tr(", about %1 left").arg(duration(p.etaSeconds));
    m_status->setText(line);
}

void ConvertDialog::onFinished(const ConvertSummary &s) {
    setRunning(false);
    m_bar->setValue(1000);
    m_written = s.outputPath;
    QStringList kinds;
    if (s.recurrentGroups) kinds << tr("%n recurrent", nullptr, s.recurrentGroups);
    if (s.windowRecurrentGroups) kinds << tr("%n window + recurrent", nullptr, s.windowRecurrentGroups);
    if (s.windowGroups) kinds << tr("%n window", nullptr, s.windowGroups);
    m_status->setText(tr("Wrote %1 in %2: %3 of %4 KV groups replaced (%5); the attention cache keeps %6% of "
                         "the original's.")
                          .arg(QFileInfo(s.outputPath).fileName(), duration(s.seconds))
                          .arg(s.replacedGroups)
                          .arg(s.totalGroups)
                          .arg(kinds.join(QStringLiteral(", ")))
                          .arg(100.0 * s.kvFractionKept, 0, 'f', 0));
    m_useButton->setEnabled(true);
    m_useButton->setDefault(true);
}

void ConvertDialog::onFailed(const QString &message, bool cancelled) {
    setRunning(false);
    m_bar->setValue(0);
    m_status->setText(cancelled ? message : tr("The conversion failed: %1").arg(message));
}
