#include "app_settings.h"

#include <QDir>
#include <QFileInfo>
#include <QStandardPaths>

#include <algorithm>

namespace {
constexpr int kMaxRecent = 10;

template <typename T> T bounded(const QVariant &v, T lo, T hi, T fallback) {
    bool ok = false;
    const double d = v.toDouble(&ok);
    if (!ok || !(d >= double(lo) && d <= double(hi))) return fallback;
    return T(d);
}
} // namespace

AppSettings::AppSettings()
    : m_settings(QSettings::NativeFormat, QSettings::UserScope, QStringLiteral("RecurDesk"),
                 QStringLiteral("RecurDesk")) {}

AppSettings::AppSettings(const QString &iniFile) : m_settings(iniFile, QSettings::IniFormat) {}

QString AppSettings::defaultModelPath() {
    QString data = qEnvironmentVariable("XDG_DATA_HOME");
    if (data.isEmpty()) data = QDir::homePath() + QStringLiteral("/.local/share");
    return data + QStringLiteral("/RecurDesk/models/SmolLM2-135M-Instruct.Q4_1.gguf");
}

QString AppSettings::resolveModelPath() const {
    if (!m_modelOverride.isEmpty()) return m_modelOverride;
    const QString configured = modelPath();
    if (!configured.isEmpty() && QFileInfo(configured).isFile()) return configured;
    const QString env = qEnvironmentVariable("RECUR_MODEL");
    if (!env.isEmpty() && QFileInfo(env).isFile()) return env;
    const QString def = defaultModelPath();
    if (QFileInfo(def).isFile()) return def;
    return QString();
}

QString AppSettings::modelPath() const {
    return m_settings.value(QStringLiteral("model/path")).toString();
}

void AppSettings::setModelPath(const QString &path) {
    m_settings.setValue(QStringLiteral("model/path"), path);
}

EngineConfig AppSettings::engineConfig() const {
    EngineConfig c;
    c.modelPath = resolveModelPath();
    c.device = m_settings.value(QStringLiteral("engine/device"), c.device).toString();
    if (c.device != QLatin1String("cpu") && c.device != QLatin1String("cuda") && c.device != QLatin1String("auto"))
        c.device = EngineConfig().device;
    c.threads = bounded(m_settings.value(QStringLiteral("engine/threads"), c.threads), 0, 1024, c.threads);
    c.contextLength = bounded(m_settings.value(QStringLiteral("engine/contextLength"), 0), 0, 1 << 20, 0);
    c.batch = bounded(m_settings.value(QStringLiteral("engine/batch"), c.batch), 1, 8192, c.batch);
    c.recencyWindow = bounded(m_settings.value(QStringLiteral("engine/recencyWindow"), c.recencyWindow), 0,
                              1 << 16, c.recencyWindow);
    return c;
}

void AppSettings::setEngineConfig(const EngineConfig &c) {
    if (!c.modelPath.isEmpty()) setModelPath(c.modelPath);
    m_settings.setValue(QStringLiteral("engine/device"), c.device);
    m_settings.setValue(QStringLiteral("engine/threads"), c.threads);
    m_settings.setValue(QStringLiteral("engine/contextLength"), c.contextLength);
    m_settings.setValue(QStringLiteral("engine/batch"), c.batch);
    m_settings.setValue(QStringLiteral("engine/recencyWindow"), c.recencyWindow);
}

SamplingConfig AppSettings::sampling() const {
    SamplingConfig s;
    s.temperature = bounded(m_settings.value(QStringLiteral("sampling/temperature"), s.temperature), 0.0, 5.0,
                            s.temperature);
    s.topK = bounded(m_settings.value(QStringLiteral("sampling/topK"), s.topK), 0, 1 << 20, s.topK);
    s.topP = bounded(m_settings.value(QStringLiteral("sampling/topP"), s.topP), 0.0, 1.0, s.topP);
    s.minP = bounded(m_settings.value(QStringLiteral("sampling/minP"), s.minP), 0.0, 1.0, s.minP);
    s.repeatPenalty = bounded(m_settings.value(QStringLiteral("sampling/repeatPenalty"), s.repeatPenalty),
                              0.01, 10.0, s.repeatPenalty);
    s.maxTokens =
        bounded(m_settings.value(QStringLiteral("sampling/maxTokens"), s.maxTokens), 1, 1 << 20, s.maxTokens);
    bool ok = false;
    const quint64 seed = m_settings.value(QStringLiteral("sampling/seed"), s.seed).toULongLong(&ok);
    if (ok) s.seed = seed;
    return s;
}

void AppSettings::setSampling(const SamplingConfig &s) {
    m_settings.setValue(QStringLiteral("sampling/temperature"), s.temperature);
    m_settings.setValue(QStringLiteral("sampling/topK"), s.topK);
    m_settings.setValue(QStringLiteral("sampling/topP"), s.topP);
    m_settings.setValue(QStringLiteral("sampling/minP"), s.minP);
    m_settings.setValue(QStringLiteral("sampling/repeatPenalty"), s.repeatPenalty);
    m_settings.setValue(QStringLiteral("sampling/maxTokens"), s.maxTokens);
    m_settings.setValue(QStringLiteral("sampling/seed"), s.seed);
}

QString AppSettings::theme() const {
    const QString t = m_settings.value(QStringLiteral("ui/theme"), QStringLiteral("system")).toString();
    return (t == QLatin1String("light") || t == QLatin1String("dark")) ? t : QStringLiteral("system");
}

void AppSettings::setTheme(const QString &theme) {
    m_settings.setValue(QStringLiteral("ui/theme"), theme);
}

QStringList AppSettings::recentDocuments() const {
    return m_settings.value(QStringLiteral("documents/recent")).toStringList().mid(0, kMaxRecent);
}

void AppSettings::addRecentDocument(const QString &path) {
    QStringList list = recentDocuments();
    const QString abs = QFileInfo(path).absoluteFilePath();
    list.removeAll(abs);
    list.prepend(abs);
    m_settings.setValue(QStringLiteral("documents/recent"), list.mid(0, kMaxRecent));
}

QByteArray AppSettings::windowGeometry() const {
    return m_settings.value(QStringLiteral("ui/geometry")).toByteArray();
}

QByteArray AppSettings::windowState() const {
    return m_settings.value(QStringLiteral("ui/state")).toByteArray();
}

void AppSettings::setWindowGeometry(const QByteArray &geometry, const QByteArray &state) {
    m_settings.setValue(QStringLiteral("ui/geometry"), geometry);
    m_settings.setValue(QStringLiteral("ui/state"), state);
}
