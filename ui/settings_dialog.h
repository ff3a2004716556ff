#pragma once
// Preferences: model file, device, threads, context length, sampling, recency window, theme.
// Edits an EngineConfig / SamplingConfig pair; the window saves them (AppSettings) and reloads
// the model when they changed.
#include "engine_types.h"

#include <QDialog>

class QLineEdit;
class QComboBox;
class QSpinBox;
class QDoubleSpinBox;
class QCheckBox;

class SettingsDialog : public QDialog {
    Q_OBJECT
  public:
    SettingsDialog(const EngineConfig &engine, const SamplingConfig &sampling, const QString &theme,
                   QWidget *parent = nullptr);

    EngineConfig engineConfig() const;
    SamplingConfig sampling() const;
    QString theme() const;

  private:
    QLineEdit *m_model;
    QComboBox *m_device, *m_theme;
    QSpinBox *m_threads, *m_context, *m_batch, *m_window, *m_topK, *m_maxTokens;
    QDoubleSpinBox *m_temperature, *m_topP, *m_minP, *m_repeat;
    QCheckBox *m_randomSeed;
    QSpinBox *m_seed;
};
