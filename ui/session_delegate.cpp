#include "session_delegate.h"

#include "session_list_model.h"

#include <QApplication>
#include <QPainter>

namespace {
constexpr int kPadX = 10, kPadY = 7, kLineGap = 2;
QFont subtitleFont(const QFont &f) {
    QFont s = f;
    s.setPointSizeF(f.pointSizeF() * 0.85);
    return s;
}
} // namespace

QSize SessionDelegate::sizeHint(const QStyleOptionViewItem &option, const QModelIndex &) const {
    const QFontMetrics a(option.font), b(subtitleFont(option.font));
    return QSize(200, a.height() + b.height() + kLineGap + 2 * kPadY);
}

void SessionDelegate::paint(QPainter *painter, const QStyleOptionViewItem &option,
                            const QModelIndex &index) const {
    QStyleOptionViewItem opt = option;
    initStyleOption(&opt, index);
    opt.text.clear();
    const QWidget *w = option.widget;
    QStyle *style = w ? w->style() : QApplication::style();
    style->drawPrimitive(QStyle::PE_PanelItemViewItem, &opt, painter, w); // selection and hover

    const bool selected = option.state & QStyle::State_Selected;
    const QPalette &pal = option.palette;
    const QRect r = option.rect.adjusted(kPadX, kPadY, -kPadX, -kPadY);
    QFont name = option.font;
    name.setBold(true);
    const QFontMetrics nm(name), sm(subtitleFont(option.font));
    painter->save();
    painter->setFont(name);
    painter->setPen(pal.color(selected ? QPalette::HighlightedText : QPalette::Text));
    painter->drawText(QRect(r.left(), r.top(), r.width(), nm.height()), Qt::AlignLeft | Qt::AlignVCenter,
                      nm.elidedText(index.data(Qt::DisplayRole).toString(), Qt::ElideRight, r.width()));
    painter->setFont(subtitleFont(option.font));
    QColor sub = pal.color(selected ? QPalette::HighlightedText : QPalette::PlaceholderText);
    if (selected) sub.setAlpha(200);
    painter->setPen(sub);
    painter->drawText(
        QRect(r.left(), r.top() + nm.height() + kLineGap, r.width(), sm.height()),
        Qt::AlignLeft | Qt::AlignVCenter,
        sm.elidedText(index.data(SessionListModel::SubtitleRole).toString(), Qt::ElideRight, r.width()));
    painter->restore();
}
