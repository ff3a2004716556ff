#pragma once
// Shown when no model can be found (none configured, no $RECUR_MODEL, nothing at the default
// path): says what a model is, where RecurDesk looks, the one command that installs the
// default, and lets the user pick a .gguf file instead.
#include <QDialog>

class QLineEdit;

class FirstRunDialog : public QDialog {
    Q_OBJECT
  public:
    explicit FirstRunDialog(const QString &defaultModelPath, QWidget *parent = nullptr);
    // The model file chosen (empty when the user continues without one).
    QString modelPath() const { return m_path; }

  private:
    QString m_path;
};
