#include "app_icon.h"

#include <QPainter>
#include <QPainterPath>

// Geometry on a 256 × 256 canvas, the same as resources/icons/io.github.recurdesk.RecurDesk.svg:
// a blue rounded square, a white page with text lines, and a circular arrow (the recurrence)
// over its lower right corner.
QImage renderAppIcon(int size) {
    QImage img(size, size, QImage::Format_ARGB32_Premultiplied);
    img.fill(Qt::transparent);
    QPainter p(&img);
    p.setRenderHint(QPainter::Antialiasing);
    p.scale(size / 256.0, size / 256.0);

    QLinearGradient bg(0, 16, 0, 240);
    bg.setColorAt(0, QColor(0x3b, 0x7b, 0xf0));
    bg.setColorAt(1, QColor(0x24, 0x4f, 0xc4));
    QPainterPath tile;
    tile.addRoundedRect(QRectF(16, 16, 224, 224), 48, 48);
    p.fillPath(tile, bg);

    // The page, with a folded corner.
    QPainterPath page;
    page.moveTo(64, 48);
    page.lineTo(150, 48);
    page.lineTo(190, 88);
    page.lineTo(190, 208);
    page.lineTo(64, 208);
    page.closeSubpath();
    p.fillPath(page, QColor(0xff, 0xff, 0xff));
    QPainterPath fold;
    fold.moveTo(150, 48);
    fold.lineTo(150, 88);
    fold.lineTo(190, 88);
    fold.closeSubpath();
    p.fillPath(fold, QColor(0xc9, 0xd8, 0xf6));
    p.setPen(QPen(QColor(0x9d, 0xb4, 0xe6), 9, Qt::SolidLine, Qt::RoundCap));
    for (int i = 0; i < 5; ++i) {
        const int y = 84 + i * 22;
        const int right = i == 0 ? 132 : i == 4 ? 130 : 168;
        p.drawLine(QPointF(84, y), QPointF(right, y));
    }

    // The recurrence: an open ring with an arrowhead, on an orange disc.
    p.setPen(Qt::NoPen);
    p.setBrush(QColor(0xff, 0x9f, 0x1c));
    p.drawEllipse(QPointF(178, 180), 50, 50);
    QPen ring(Qt::white, 13, Qt::SolidLine, Qt::RoundCap);
    p.setPen(ring);
    p.setBrush(Qt::NoBrush);
    const QRectF arc(150, 152, 56, 56);
    p.drawArc(arc, 100 * 16, 280 * 16); // from 100° counter-clockwise through 380°
    QPainterPath head;
    head.moveTo(163, 141);
    head.lineTo(186, 152);
    head.lineTo(164, 166);
    head.closeSubpath();
    p.setPen(Qt::NoPen);
    p.setBrush(Qt::white);
    p.drawPath(head);
    p.end();
    return img;
}

QIcon appIcon() {
    QIcon icon;
    for (int s : {16, 24, 32, 48, 64, 128, 256})
        icon.addPixmap(QPixmap::fromImage(renderAppIcon(s)));
    return icon;
}
