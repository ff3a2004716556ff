#pragma once
// The conversation as bubbles: the user's questions on the right, answers on the left with
// their statistics line under them, app notices centred. A QListView over ChatModel with a
// delegate that wraps text to the view's width; it follows a streaming answer while the view
// is scrolled to the bottom, and leaves the scroll position alone once the user scrolls up.
#include "placeholder_list_view.h"

#include <QStyledItemDelegate>

class ChatDelegate : public QStyledItemDelegate {
    Q_OBJECT
  public:
    using QStyledItemDelegate::QStyledItemDelegate;
    void paint(QPainter *painter, const QStyleOptionViewItem &option,
               const QModelIndex &index) const override;
    QSize sizeHint(const QStyleOptionViewItem &option, const QModelIndex &index) const override;

  private:
    struct Layout; // bubble, text and stats rectangles of one message at one width
    Layout layout(const QStyleOptionViewItem &option, const QModelIndex &index) const;
};

class ChatView : public PlaceholderListView {
    Q_OBJECT
  public:
    explicit ChatView(QWidget *parent = nullptr);
    void setModel(QAbstractItemModel *model) override;
    // Text of the selected messages (Ctrl+C copies it).
    QString selectedText() const;

  public slots:
    void copySelection();
    void scrollToEnd();

  protected:
    void resizeEvent(QResizeEvent *event) override;
    void contextMenuEvent(QContextMenuEvent *event) override;

  private:
    ChatDelegate *m_delegate;
    bool m_stickToBottom = true; // follow new text while the user has not scrolled up
};
