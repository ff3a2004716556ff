#pragma once
// The user's settings (QSettings, organisation "RecurDesk", application "RecurDesk"): model
// file, device, threads, context length, sampling, recency window, theme, recent documents.
// Reading never fails: a missing or malformed value gives the default.
#include "engine_types.h"

#include <QSettings>
#include <QStringList>

class AppSettings {
  public:
    // The standard location (~/.config/RecurDesk/RecurDesk.conf on Linux).
    AppSettings();
    // A given file, for tests and --settings.
    explicit AppSettings(const QString &iniFile);

    // Where installer/setup.sh puts the default model:
    // $XDG_DATA_HOME/RecurDesk/models/SmolLM2-135M-Instruct.Q4_1.gguf (XDG_DATA_HOME defaulting
    // to ~/.local/share), the same path the recur CLI falls back to.
    static QString defaultModelPath();
    // The model to load: the configured file if it exists, else $RECUR_MODEL, else the default
    // model if it exists; empty when there is none (the first-run dialog then asks for one).
    QString resolveModelPath() const;

    QString modelPath() const;
    void setModelPath(const QString &path);
    // A model for this run only (--model): wins over the stored path and is never saved.
    void setModelOverride(const QString &path) { m_modelOverride = path; }

    EngineConfig engineConfig() const; // modelPath filled by resolveModelPath()
    void setEngineConfig(const EngineConfig &config);

    SamplingConfig sampling() const;
    void setSampling(const SamplingConfig &sampling);

    // "system" (follow the desktop), "light" or "dark".
    QString theme() const;
    void setTheme(const QString &theme);

    QStringList recentDocuments() const;
    void addRecentDocument(const QString &path); // most recent first, at most 10

    QByteArray windowGeometry() const;
    QByteArray windowState() const;
    void setWindowGeometry(const QByteArray &geometry, const QByteArray &state);

    void sync() { m_settings.sync(); }
    QSettings &raw() { return m_settings; }

  private:
    mutable QSettings m_settings;
    QString m_modelOverride;
};
