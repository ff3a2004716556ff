#pragma once
// The application icon, drawn with QPainter so that it needs no SVG plugin at run time (Qt's SVG
// module is not a dependency). resources/icons/ holds the same design as SVG (for the desktop
// and AppStream) and as PNGs written by `recurdesk --render-icon`.
#include <QIcon>
#include <QImage>

QImage renderAppIcon(int size);
QIcon appIcon();
