#include "chat_view.h"

#include "chat_model.h"
#include "theme.h"

#include <QAbstractTextDocumentLayout>
#include <QAction>
#include <QApplication>
#include <QClipboard>
#include <QContextMenuEvent>
#include <QMenu>
#include <QPainter>
#include <QPainterPath>
#include <QScrollBar>
#include <QTextDocument>

#include <algorithm>
#include <cmath>

namespace {
constexpr int kOuter = 14; // space between the view's edge and a bubble
constexpr int kPadX = 12, kPadY = 8;
constexpr int kGap = 10; // between messages
constexpr int kStatsGap = 4;
constexpr double kUserWidth = 0.78, kAnswerWidth = 0.9;

// The text of a message laid out for painting and measuring alike: word wrap, and breaks inside
// a word only when the word alone is wider than the bubble (a URL).
// Answers are Markdown, as chat models write them: a single line break is a soft break (a model
// quoting a hard-wrapped text copies its line ends), lists and emphasis render as such.
void setUp(QTextDocument &doc, const QString &text, bool markdown, const QFont &font, qreal width) {
    doc.setDefaultFont(font);
    doc.setDocumentMargin(0);
    QTextOption opt;
    opt.setWrapMode(QTextOption::WrapAtWordBoundaryOrAnywhere);
    doc.setDefaultTextOption(opt);
    if (markdown)
        doc.setMarkdown(text, QTextDocument::MarkdownDialectGitHub);
    else
        doc.setPlainText(text);
    doc.setTextWidth(width);
}

QFont statsFont(const QFont &base) {
    QFont f = base;
    f.setPointSizeF(base.pointSizeF() * 0.85);
    return f;
}
} // namespace

struct ChatDelegate::Layout {
    QRect bubble, text, stats;
    QString shownText;
    QString statsText;
    int height = 0;
};

ChatDelegate::Layout ChatDelegate::layout(const QStyleOptionViewItem &option,
                                          const QModelIndex &index) const {
    Layout l;
    const auto kind = index.data(ChatModel::KindRole).value<ChatModel::Kind>();
    const bool streaming = index.data(ChatModel::StreamingRole).toBool();
    l.shownText = index.data(ChatModel::TextRole).toString();
    if (streaming) l.shownText += QStringLiteral(" ▍"); // the cursor of an answer being written
    l.statsText = index.data(ChatModel::StatsRole).toString();

    const int full = std::max(120, option.rect.width() - 2 * kOuter);
    const bool centred = kind == ChatModel::Kind::Notice;
    const int maxBubble =
        centred ? full : int(full * (kind == ChatModel::Kind::User ? kUserWidth : kAnswerWidth));
    QFont font = option.font;
    if (centred) font.setItalic(true);

    QTextDocument doc;
    setUp(doc, l.shownText, kind == ChatModel::Kind::Assistant, font, maxBubble - 2 * kPadX);
    const int textW = std::min(maxBubble - 2 * kPadX, int(std::ceil(doc.idealWidth())) + 1);
    const int textH = int(std::ceil(doc.size().height()));
    const int bubbleW = textW + 2 * kPadX, bubbleH = textH + 2 * kPadY;

    int x = option.rect.left() + kOuter;
    if (kind == ChatModel::Kind::User)
        x = option.rect.left() + kOuter + full - bubbleW;
    else if (centred)
        x = option.rect.left() + kOuter + (full - bubbleW) / 2;
    const int y = option.rect.top() + kGap / 2;
    l.bubble = QRect(x, y, bubbleW, bubbleH);
    l.text = l.bubble.adjusted(kPadX, kPadY, -kPadX, -kPadY);
    l.height = bubbleH + kGap;
    if (!l.statsText.isEmpty()) {
        const QFontMetrics fm(statsFont(option.font));
        const QRect need = fm.boundingRect(QRect(0, 0, maxBubble - 8, 10000), Qt::TextWordWrap, l.statsText);
        l.stats = QRect(x + 4, l.bubble.bottom() + 1 + kStatsGap, maxBubble - 8, need.height());
        l.height += kStatsGap + need.height();
    }
    return l;
}

QSize ChatDelegate::sizeHint(const QStyleOptionViewItem &option, const QModelIndex &index) const {
    const Layout l = layout(option, index);
    return QSize(option.rect.width(), l.height);
}

void ChatDelegate::paint(QPainter *painter, const QStyleOptionViewItem &option,
                         const QModelIndex &index) const {
    const Layout l = layout(option, index);
    const auto kind = index.data(ChatModel::KindRole).value<ChatModel::Kind>();
    const Theme::Colors c = Theme::colors();
    const QPalette &pal = option.palette;

    painter->save();
    painter->setRenderHint(QPainter::Antialiasing);
    QColor fill, text;
    switch (kind) {
    case ChatModel::Kind::User:
        fill = c.accent, text = c.accentText;
        break;
    case ChatModel::Kind::Assistant:
        fill = c.assistantBubble, text = pal.color(QPalette::Text);
        break;
    case ChatModel::Kind::Error:
        fill = QColor(c.errorText.red(), c.errorText.green(), c.errorText.blue(), 28), text = c.errorText;
        break;
    case ChatModel::Kind::Notice:
        fill = Qt::transparent, text = c.noticeText;
        break;
    }
    QPainterPath path;
    path.addRoundedRect(QRectF(l.bubble), 10, 10);
    painter->fillPath(path, fill);
    if (option.state & QStyle::State_Selected) {
        painter->setPen(QPen(pal.color(QPalette::Highlight), 2));
        painter->drawPath(path);
    }

    QFont font = option.font;
    if (kind == ChatModel::Kind::Notice) font.setItalic(true);
    QTextDocument doc;
    setUp(doc, l.shownText, kind == ChatModel::Kind::Assistant, font, l.text.width());
    painter->translate(l.text.topLeft());
    QAbstractTextDocumentLayout::PaintContext ctx;
    ctx.palette.setColor(QPalette::Text, text);
    doc.documentLayout()->draw(painter, ctx);
    painter->translate(-l.text.topLeft());

    if (!l.stats.isNull()) {
        painter->setFont(statsFont(option.font));
        painter->setPen(c.noticeText);
        painter->drawText(l.stats, Qt::AlignLeft | Qt::AlignTop | Qt::TextWordWrap, l.statsText);
    }
    painter->restore();
}

ChatView::ChatView(QWidget *parent) : PlaceholderListView(parent), m_delegate(new ChatDelegate(this)) {
    setItemDelegate(m_delegate);
    setVerticalScrollMode(QAbstractItemView::ScrollPerPixel);
    setHorizontalScrollBarPolicy(Qt::ScrollBarAlwaysOff);
    setSelectionMode(QAbstractItemView::ExtendedSelection);
    setResizeMode(QListView::Adjust);
    setUniformItemSizes(false);
    setWordWrap(true);
    setFrameShape(QFrame::NoFrame);
    setSpacing(0);
    verticalScrollBar()->setSingleStep(24);
    // While stuck to the bottom, growth of the content (a longer answer) scrolls with it.
    connect(verticalScrollBar(), &QScrollBar::rangeChanged, this, [this](int, int max) {
        if (m_stickToBottom) verticalScrollBar()->setValue(max);
    });
    connect(verticalScrollBar(), &QScrollBar::valueChanged, this,
            [this](int v) { m_stickToBottom = v >= verticalScrollBar()->maximum() - 4; });
    auto *copy = new QAction(tr("Copy"), this);
    copy->setShortcut(QKeySequence::Copy);
    copy->setShortcutContext(Qt::WidgetShortcut);
    connect(copy, &QAction::triggered, this, &ChatView::copySelection);
    addAction(copy);
}

void ChatView::setModel(QAbstractItemModel *model) {
    if (this->model()) disconnect(this->model(), nullptr, this, nullptr);
    PlaceholderListView::setModel(model);
    if (!model) return;
    // A message whose text grows changes height: ask the view to lay the rows out again.
    connect(model, &QAbstractItemModel::dataChanged, this,
            [this](const QModelIndex &tl, const QModelIndex &br) {
                for (int r = tl.row(); r <= br.row(); ++r)
                    emit m_delegate->sizeHintChanged(this->model()->index(r, 0));
            });
    connect(model, &QAbstractItemModel::rowsInserted, this, [this] { m_stickToBottom = true; });
    connect(model, &QAbstractItemModel::modelReset, this, [this] {
        m_stickToBottom = true;
        scrollToEnd();
    });
}

QString ChatView::selectedText() const {
    QModelIndexList rows = selectionModel() ? selectionModel()->selectedRows() : QModelIndexList();
    std::sort(rows.begin(), rows.end(),
              [](const QModelIndex &a, const QModelIndex &b) { return a.row() < b.row(); });
    QStringList parts;
    for (const QModelIndex &i : rows)
        parts << i.data(ChatModel::TextRole).toString();
    return parts.join(QStringLiteral("\n\n"));
}

void ChatView::copySelection() {
    const QString text = selectedText();
    if (!text.isEmpty()) QApplication::clipboard()->setText(text);
}

void ChatView::scrollToEnd() {
    m_stickToBottom = true;
    scrollToBottom();
}

void ChatView::resizeEvent(QResizeEvent *event) {
    PlaceholderListView::resizeEvent(event);
    // Wrapping depends on the width: every row's height changes with it.
    doItemsLayout();
    if (m_stickToBottom) scrollToBottom();
}

void ChatView::contextMenuEvent(QContextMenuEvent *event) {
    QMenu menu(this);
    QAction *copy = menu.addAction(tr("Copy"), this, &ChatView::copySelection);
    copy->setEnabled(!selectedText().isEmpty());
    menu.exec(event->globalPos());
}
