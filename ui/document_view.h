#pragma once
// The document being asked about: its title and size above its text, read-only. The passages an
// answer used are highlighted (clicking an answer shows them). Before any document is open it
// shows what to do: open a file or drop one here.
#include "engine_types.h"

#include <QWidget>

class QLabel;
class QPlainTextEdit;
class QStackedWidget;
class QPushButton;

class DocumentView : public QWidget {
    Q_OBJECT
  public:
    explicit DocumentView(QWidget *parent = nullptr);

    void setDocument(const DocumentInfo &doc);
    void clear();
    bool hasDocument() const { return m_hasDocument; }
    // "170 000 tokens; the passages most relevant to each question are used" (from the plan).
    void setPlanSummary(const QString &text);
    // Marks the given passages (byte offsets into the UTF-8 text) and scrolls to the first.
    void highlightPassages(const QVector<PassageRef> &passages);
    QString text() const;
    QPlainTextEdit *editor() const { return m_text; }

  signals:
    void openRequested();

  private:
    QStackedWidget *m_stack;
    QWidget *m_empty;
    QLabel *m_title, *m_meta;
    QPlainTextEdit *m_text;
    QByteArray m_utf8; // the text as the store keeps it: passage offsets count its bytes
    bool m_hasDocument = false;
    QString m_baseMeta;
};
