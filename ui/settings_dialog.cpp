#include "settings_dialog.h"

#include <algorithm>

#include <QCheckBox>
#include <QComboBox>
#include <QDialogButtonBox>
#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QLineEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QThread>
#include <QVBoxLayout>

namespace {
constexpr quint64 kRandomSeed = 0xFFFFFFFFu; // recur::random_seed
}

SettingsDialog::SettingsDialog(const EngineConfig &engine, const SamplingConfig &sampling,
                               const QString &theme, QWidget *parent)
    : QDialog(parent) {
    setWindowTitle(tr("Preferences"));

    auto *modelBox = new QGroupBox(tr("Model and device"));
    auto *mf = new QFormLayout(modelBox);
    m_model = new QLineEdit(engine.modelPath);
    m_model->setMinimumWidth(360);
    auto *browse = new QPushButton(tr("Browse…"));
    connect(browse, &QPushButton::clicked, this, [this] {
        const QString f = QFileDialog::getOpenFileName(this, tr("Choose a Model"), m_model->text(),
                                                       tr("GGUF models (*.gguf)"));
        if (!f.isEmpty()) m_model->setText(f);
    });
    auto *row = new QHBoxLayout;
    row->addWidget(m_model, 1);
    row->addWidget(browse);
    mf->addRow(tr("Model file:"), row);
    m_device = new QComboBox;
    const DeviceSupport devices = deviceSupport();
    m_device->addItem(devices.cudaAvailable ? tr("Automatic (GPU: %1)").arg(devices.gpuName) : tr("Automatic (CPU)"),
                      QStringLiteral("auto"));
    m_device->addItem(tr("CPU"), QStringLiteral("cpu"));
    if (devices.cudaAvailable)
        m_device->addItem(tr("CUDA: %1").arg(devices.gpuName), QStringLiteral("cuda"));
    else
        m_device->addItem(devices.cudaBuilt ? tr("CUDA (no usable GPU: %1)").arg(devices.reason)
                                            : tr("CUDA (not in this build)"),
                          QStringLiteral("cuda"));
    // A GPU that is not there cannot be chosen; a saved "cuda" still shows as chosen, and loading
    // then says why it fails.
    if (!devices.cudaAvailable) m_device->setItemData(2, 0, Qt::UserRole - 1);
    m_device->setCurrentIndex(std::max(0, m_device->findData(engine.device)));
    mf->addRow(tr("Device:"), m_device);
    m_threads = new QSpinBox;
    m_threads->setRange(0, 256);
    m_threads->setSpecialValueText(tr("All cores (%1)").arg(QThread::idealThreadCount()));
    m_threads->setValue(engine.threads);
    mf->addRow(tr("Threads:"), m_threads);
    m_context = new QSpinBox;
    m_context->setRange(0, 1 << 20);
    m_context->setSingleStep(1024);
    m_context->setSpecialValueText(tr("Model's (at most 4096)"));
    m_context->setSuffix(tr(" tokens"));
    m_context->setValue(engine.contextLength);
    m_context->setToolTip(tr("Longer contexts read more of a document at once and need more memory (the "
                             "Memory panel shows how much)."));
    mf->addRow(tr("Context length:"), m_context);
    m_batch = new QSpinBox;
    m_batch->setRange(1, 8192);
    m_batch->setValue(engine.batch);
    m_batch->setSuffix(tr(" tokens"));
    mf->addRow(tr("Prefill batch:"), m_batch);
    m_window = new QSpinBox;
    m_window->setRange(0, 65536);
    m_window->setSpecialValueText(tr("Off"));
    m_window->setValue(engine.recencyWindow);
    m_window->setSuffix(tr(" tokens"));
    m_window->setToolTip(
        tr("k of recency(k): the heads panel shows the attention mass on the last k tokens."));
    mf->addRow(tr("Recency window:"), m_window);

    auto *sampBox = new QGroupBox(tr("Answers"));
    auto *sf = new QFormLayout(sampBox);
    m_temperature = new QDoubleSpinBox;
    m_temperature->setRange(0, 5);
    m_temperature->setSingleStep(0.05);
    m_temperature->setSpecialValueText(tr("0 (greedy)"));
    m_temperature->setValue(sampling.temperature);
    sf->addRow(tr("Temperature:"), m_temperature);
    m_topK = new QSpinBox;
    m_topK->setRange(0, 100000);
    m_topK->setSpecialValueText(tr("Off"));
    m_topK->setValue(sampling.topK);
    sf->addRow(tr("Top-k:"), m_topK);
    m_topP = new QDoubleSpinBox;
    m_topP->setRange(0, 1);
    m_topP->setSingleStep(0.01);
    m_topP->setValue(sampling.topP);
    sf->addRow(tr("Top-p:"), m_topP);
    m_minP = new QDoubleSpinBox;
    m_minP->setRange(0, 1);
    m_minP->setSingleStep(0.01);
    m_minP->setValue(sampling.minP);
    sf->addRow(tr("Min-p:"), m_minP);
    m_repeat = new QDoubleSpinBox;
    m_repeat->setRange(0.5, 3);
    m_repeat->setSingleStep(0.05);
    m_repeat->setValue(sampling.repeatPenalty);
    sf->addRow(tr("Repetition penalty:"), m_repeat);
    m_maxTokens = new QSpinBox;
    m_maxTokens->setRange(1, 1 << 16);
    m_maxTokens->setValue(sampling.maxTokens);
    m_maxTokens->setSuffix(tr(" tokens"));
    sf->addRow(tr("Longest answer:"), m_maxTokens);
    m_randomSeed = new QCheckBox(tr("Random"));
    m_seed = new QSpinBox;
    m_seed->setRange(0, 2147483647);
    m_randomSeed->setChecked(sampling.seed == kRandomSeed);
    m_seed->setValue(sampling.seed == kRandomSeed ? 42 : int(std::min<quint64>(sampling.seed, 2147483647u)));
    m_seed->setEnabled(!m_randomSeed->isChecked());
    connect(m_randomSeed, &QCheckBox::toggled, m_seed, [this](bool on) { m_seed->setEnabled(!on); });
    auto *seedRow = new QHBoxLayout;
    seedRow->addWidget(m_randomSeed);
    seedRow->addWidget(m_seed, 1);
    sf->addRow(tr("Seed:"), seedRow);

    auto *lookBox = new QGroupBox(tr("Appearance"));
    auto *lf = new QFormLayout(lookBox);
    m_theme = new QComboBox;
    m_theme->addItem(tr("Follow the system"), QStringLiteral("system"));
    m_theme->addItem(tr("Light"), QStringLiteral("light"));
    m_theme->addItem(tr("Dark"), QStringLiteral("dark"));
    m_theme->setCurrentIndex(std::max(0, m_theme->findData(theme)));
    lf->addRow(tr("Theme:"), m_theme);

    auto *buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel);
    connect(buttons, &QDialogButtonBox::accepted, this, &QDialog::accept);
    connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::reject);

    auto *v = new QVBoxLayout(this);
    v->addWidget(modelBox);
    v->addWidget(sampBox);
    v->addWidget(lookBox);
    v->addWidget(buttons);
}

EngineConfig SettingsDialog::engineConfig() const {
    EngineConfig c;
    c.modelPath = m_model->text().trimmed();
    c.device = m_device->currentData().toString();
    c.threads = m_threads->value();
    c.contextLength = m_context->value();
    c.batch = m_batch->value();
    c.recencyWindow = m_window->value();
    return c;
}

SamplingConfig SettingsDialog::sampling() const {
    SamplingConfig s;
    s.temperature = m_temperature->value();
    s.topK = m_topK->value();
    s.topP = m_topP->value();
    s.minP = m_minP->value();
    s.repeatPenalty = m_repeat->value();
    s.maxTokens = m_maxTokens->value();
    s.seed = m_randomSeed->isChecked() ? kRandomSeed : quint64(m_seed->value());
    return s;
}

QString SettingsDialog::theme() const {
    return m_theme->currentData().toString();
}
