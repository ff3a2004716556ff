#pragma once
// Light and dark palettes, following the desktop. Qt 6.4 has no colour-scheme API
// (QStyleHints::colorScheme is 6.5), so "system" is decided from, in order: $RECURDESK_THEME
// (light|dark), the desktop's own palette as Qt received it at start-up (a dark platform theme
// shows there), then GNOME's color-scheme / gtk-theme setting and KDE's kdeglobals. Both palettes
// are complete (Fusion style), so the app looks the same on any desktop.
#include <QColor>
#include <QPalette>
#include <QString>

namespace Theme {

// Call once after QApplication is made, before any setPalette: remembers the desktop's palette.
void captureSystemPalette();
// Whether the desktop prefers dark right now (see above; may run `gsettings` for a moment).
bool systemPrefersDark();
// "system", "light" or "dark" -> applies Fusion and the palette to the application.
// Returns whether the applied palette is dark.
bool apply(const QString &mode);
bool isDark();

QPalette lightPalette();
QPalette darkPalette();

// Colours the custom-painted views and the charts share.
struct Colors {
    QColor accent; // user bubbles, highlights
    QColor accentText;
    QColor assistantBubble;
    QColor noticeText;
    QColor errorText;
    QColor kv;            // attention KV cache in the memory chart
    QColor recurrent;     // recurrent / window state
    QColor fullAttention; // what full attention would use
    QColor chartBackground;
    QColor chartGrid;
    QColor chartText;
    QColor passageHighlight;
};
Colors colors();

} // namespace Theme
