#include "document_view.h"

#include "theme.h"

#include <QLabel>
#include <QLocale>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QRegularExpression>
#include <QStackedWidget>
#include <QTextBlock>
#include <QVBoxLayout>

DocumentView::DocumentView(QWidget *parent) : QWidget(parent) {
    m_stack = new QStackedWidget(this);
    auto *outer = new QVBoxLayout(this);
    outer->setContentsMargins(0, 0, 0, 0);
    outer->addWidget(m_stack);

    // What an empty window says.
    m_empty = new QWidget;
    auto *e = new QVBoxLayout(m_empty);
    e->addStretch(2);
    auto *headline = new QLabel(tr("Open a document to start"));
    QFont hf = headline->font();
    hf.setPointSizeF(hf.pointSizeF() * 1.5);
    hf.setBold(true);
    headline->setFont(hf);
    headline->setAlignment(Qt::AlignCenter);
    auto *hint = new QLabel(tr("A text, Markdown or PDF file — as long as you like.\n"
                               "Drop it here, or press Ctrl+O."));
    hint->setAlignment(Qt::AlignCenter);
    hint->setForegroundRole(QPalette::PlaceholderText);
    auto *open = new QPushButton(tr("Open Document…"));
    open->setDefault(true);
    open->setMinimumWidth(180);
    connect(open, &QPushButton::clicked, this, &DocumentView::openRequested);
    e->addWidget(headline);
    e->addSpacing(8);
    e->addWidget(hint);
    e->addSpacing(16);
    e->addWidget(open, 0, Qt::AlignHCenter);
    e->addStretch(3);
    m_stack->addWidget(m_empty);

    auto *page = new QWidget;
    auto *v = new QVBoxLayout(page);
    v->setContentsMargins(16, 12, 8, 0);
    v->setSpacing(2);
    m_title = new QLabel;
    QFont tf = m_title->font();
    tf.setPointSizeF(tf.pointSizeF() * 1.25);
    tf.setBold(true);
    m_title->setFont(tf);
    m_title->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_meta = new QLabel;
    m_meta->setForegroundRole(QPalette::PlaceholderText);
    m_meta->setWordWrap(true);
    m_text = new QPlainTextEdit;
    m_text->setReadOnly(true);
    m_text->setFrameShape(QFrame::NoFrame);
    m_text->setLineWrapMode(QPlainTextEdit::WidgetWidth);
    QFont bf = m_text->font();
    bf.setPointSizeF(bf.pointSizeF() * 1.05);
    m_text->setFont(bf);
    v->addWidget(m_title);
    v->addWidget(m_meta);
    v->addSpacing(8);
    v->addWidget(m_text, 1);
    m_stack->addWidget(page);
    m_stack->setCurrentWidget(m_empty);
}

void DocumentView::setDocument(const DocumentInfo &doc) {
    m_hasDocument = true;
    m_utf8 = doc.text.toUtf8();
    m_title->setText(doc.title.isEmpty() ? tr("Untitled") : doc.title);
    const QLocale loc;
    const qint64 words =
        doc.text.split(QRegularExpression(QStringLiteral("\\s+")), Qt::SkipEmptyParts).size();
    m_baseMeta =
        tr("%1 · %2 words · %3").arg(doc.format.toUpper(), loc.toString(words), formatBytes(m_utf8.size()));
    m_meta->setText(m_baseMeta);
    m_text->setPlainText(doc.text);
    m_text->setExtraSelections({});
    m_stack->setCurrentIndex(1);
}

void DocumentView::clear() {
    m_hasDocument = false;
    m_utf8.clear();
    m_text->clear();
    m_stack->setCurrentWidget(m_empty);
}

void DocumentView::setPlanSummary(const QString &text) {
    m_meta->setText(text.isEmpty() ? m_baseMeta : m_baseMeta + QStringLiteral(" · ") + text);
}

QString DocumentView::text() const {
    return m_text->toPlainText();
}

void DocumentView::highlightPassages(const QVector<PassageRef> &passages) {
    QList<QTextEdit::ExtraSelection> marks;
    QTextCharFormat fmt;
    fmt.setBackground(Theme::colors().passageHighlight);
    if (Theme::isDark()) fmt.setForeground(QColor(0xf4, 0xf0, 0xe0));
    int first = -1;
    for (const PassageRef &p : passages) {
        if (p.begin < 0 || p.end > m_utf8.size() || p.begin >= p.end) continue;
        // Byte offsets to QString positions: the UTF-16 length of the bytes before each.
        const int from = int(QString::fromUtf8(m_utf8.constData(), p.begin).size());
        const int to = from + int(QString::fromUtf8(m_utf8.constData() + p.begin, p.end - p.begin).size());
        QTextCursor c(m_text->document());
        c.setPosition(from);
        c.setPosition(to, QTextCursor::KeepAnchor);
        marks.push_back({c, fmt});
        if (first < 0 || from < first) first = from;
    }
    m_text->setExtraSelections(marks);
    if (first >= 0) {
        QTextCursor c(m_text->document());
        c.setPosition(first);
        m_text->setTextCursor(c);
        m_text->centerCursor();
    }
}
