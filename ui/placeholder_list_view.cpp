#include "placeholder_list_view.h"

#include <QPainter>

void PlaceholderListView::setPlaceholderText(const QString &text) {
    m_placeholder = text;
    viewport()->update();
}

void PlaceholderListView::paintEvent(QPaintEvent *event) {
    QListView::paintEvent(event);
    if (m_placeholder.isEmpty() || (model() && model()->rowCount(rootIndex()) > 0)) return;
    QPainter p(viewport());
    p.setPen(palette().color(QPalette::PlaceholderText));
    const QRect r = viewport()->rect().adjusted(24, 24, -24, -24);
    p.drawText(r, Qt::AlignCenter | Qt::TextWordWrap, m_placeholder);
}
