#include "theme.h"

#include <QApplication>
#include <QDir>
#include <QFile>
#include <QProcess>
#include <QSettings>
#include <QStandardPaths>
#include <QStyleFactory>

#include <optional>

namespace {
QPalette g_systemPalette;
bool g_captured = false;
bool g_dark = false;

bool isDarkColor(const QColor &c) {
    return c.lightness() < 110;
}

QString runQuick(const QString &program, const QStringList &args) {
    if (QStandardPaths::findExecutable(program).isEmpty()) return QString();
    QProcess p;
    p.start(program, args);
    if (!p.waitForFinished(400)) {
        p.kill();
        p.waitForFinished(100);
        return QString();
    }
    return QString::fromUtf8(p.readAllStandardOutput()).trimmed();
}

// GNOME (and anything reading its settings): color-scheme 'prefer-dark', or a "-dark" GTK theme.
std::optional<bool> gnomePrefersDark() {
    const QString scheme = runQuick(QStringLiteral("gsettings"),
                                    {QStringLiteral("get"), QStringLiteral("org.gnome.desktop.interface"),
                                     QStringLiteral("color-scheme")});
    if (scheme.contains(QLatin1String("prefer-dark"))) return true;
    if (scheme.contains(QLatin1String("prefer-light"))) return false;
    const QString gtk = runQuick(
        QStringLiteral("gsettings"),
        {QStringLiteral("get"), QStringLiteral("org.gnome.desktop.interface"), QStringLiteral("gtk-theme")});
    if (gtk.contains(QLatin1String("dark"), Qt::CaseInsensitive)) return true;
    return std::nullopt;
}

// KDE: the window background colour of the active colour scheme.
std::optional<bool> kdePrefersDark() {
    const QString file = QStandardPaths::writableLocation(QStandardPaths::GenericConfigLocation) +
                         QStringLiteral("/kdeglobals");
    if (!QFile::exists(file)) return std::nullopt;
    QSettings kde(file, QSettings::IniFormat);
    const QStringList rgb = kde.value(QStringLiteral("Colors:Window/BackgroundNormal")).toStringList();
    if (rgb.size() < 3) return std::nullopt;
    return isDarkColor(QColor(rgb[0].toInt(), rgb[1].toInt(), rgb[2].toInt()));
}
} // namespace

namespace Theme {

void captureSystemPalette() {
    if (g_captured) return;
    g_systemPalette = QApplication::palette();
    g_captured = true;
}

bool systemPrefersDark() {
    const QString env = qEnvironmentVariable("RECURDESK_THEME").toLower();
    if (env == QLatin1String("dark")) return true;
    if (env == QLatin1String("light")) return false;
    // A platform theme that is dark says so through the palette Qt started with.
    if (g_captured && isDarkColor(g_systemPalette.color(QPalette::Window))) return true;
    if (auto kde = kdePrefersDark()) return *kde;
    if (auto gnome = gnomePrefersDark()) return *gnome;
    return false;
}

QPalette lightPalette() {
    QPalette p;
    p.setColor(QPalette::Window, QColor(0xf4, 0xf5, 0xf7));
    p.setColor(QPalette::WindowText, QColor(0x1d, 0x1f, 0x23));
    p.setColor(QPalette::Base, QColor(0xff, 0xff, 0xff));
    p.setColor(QPalette::AlternateBase, QColor(0xf0, 0xf2, 0xf5));
    p.setColor(QPalette::ToolTipBase, QColor(0xff, 0xff, 0xf2));
    p.setColor(QPalette::ToolTipText, QColor(0x1d, 0x1f, 0x23));
    p.setColor(QPalette::PlaceholderText, QColor(0x8a, 0x8f, 0x98));
    p.setColor(QPalette::Text, QColor(0x1d, 0x1f, 0x23));
    p.setColor(QPalette::Button, QColor(0xea, 0xec, 0xf0));
    p.setColor(QPalette::ButtonText, QColor(0x1d, 0x1f, 0x23));
    p.setColor(QPalette::BrightText, Qt::white);
    p.setColor(QPalette::Light, QColor(0xff, 0xff, 0xff));
    p.setColor(QPalette::Midlight, QColor(0xe2, 0xe5, 0xea));
    p.setColor(QPalette::Mid, QColor(0xc4, 0xc9, 0xd1));
    p.setColor(QPalette::Dark, QColor(0x9a, 0xa0, 0xaa));
    p.setColor(QPalette::Shadow, QColor(0x5a, 0x60, 0x6a));
    p.setColor(QPalette::Highlight, QColor(0x2f, 0x6f, 0xde));
    p.setColor(QPalette::HighlightedText, Qt::white);
    p.setColor(QPalette::Link, QColor(0x1f, 0x5f, 0xc8));
    p.setColor(QPalette::Disabled, QPalette::Text, QColor(0xa0, 0xa5, 0xad));
    p.setColor(QPalette::Disabled, QPalette::WindowText, QColor(0xa0, 0xa5, 0xad));
    p.setColor(QPalette::Disabled, QPalette::ButtonText, QColor(0xa0, 0xa5, 0xad));
    return p;
}

QPalette darkPalette() {
    QPalette p;
    p.setColor(QPalette::Window, QColor(0x1f, 0x21, 0x26));
    p.setColor(QPalette::WindowText, QColor(0xe4, 0xe6, 0xea));
    p.setColor(QPalette::Base, QColor(0x17, 0x19, 0x1d));
    p.setColor(QPalette::AlternateBase, QColor(0x24, 0x27, 0x2d));
    p.setColor(QPalette::ToolTipBase, QColor(0x2c, 0x2f, 0x36));
    p.setColor(QPalette::ToolTipText, QColor(0xe4, 0xe6, 0xea));
    p.setColor(QPalette::PlaceholderText, QColor(0x80, 0x86, 0x90));
    p.setColor(QPalette::Text, QColor(0xe4, 0xe6, 0xea));
    p.setColor(QPalette::Button, QColor(0x2b, 0x2e, 0x35));
    p.setColor(QPalette::ButtonText, QColor(0xe4, 0xe6, 0xea));
    p.setColor(QPalette::BrightText, Qt::white);
    p.setColor(QPalette::Light, QColor(0x3a, 0x3e, 0x46));
    p.setColor(QPalette::Midlight, QColor(0x33, 0x36, 0x3d));
    p.setColor(QPalette::Mid, QColor(0x45, 0x49, 0x52));
    p.setColor(QPalette::Dark, QColor(0x12, 0x13, 0x16));
    p.setColor(QPalette::Shadow, QColor(0x0a, 0x0a, 0x0c));
    p.setColor(QPalette::Highlight, QColor(0x4c, 0x8d, 0xff));
    p.setColor(QPalette::HighlightedText, QColor(0x0c, 0x10, 0x18));
    p.setColor(QPalette::Link, QColor(0x79, 0xa9, 0xff));
    p.setColor(QPalette::Disabled, QPalette::Text, QColor(0x6a, 0x6f, 0x78));
    p.setColor(QPalette::Disabled, QPalette::WindowText, QColor(0x6a, 0x6f, 0x78));
    p.setColor(QPalette::Disabled, QPalette::ButtonText, QColor(0x6a, 0x6f, 0x78));
    return p;
}

bool apply(const QString &mode) {
    captureSystemPalette();
    g_dark = mode == QLatin1String("dark") || (mode != QLatin1String("light") && systemPrefersDark());
    if (QStyle *fusion = QStyleFactory::create(QStringLiteral("Fusion"))) QApplication::setStyle(fusion);
    QApplication::setPalette(g_dark ? darkPalette() : lightPalette());
    return g_dark;
}

bool isDark() {
    return g_dark;
}

Colors colors() {
    Colors c;
    if (g_dark) {
        c.accent = QColor(0x3d, 0x6f, 0xd6);
        c.accentText = Qt::white;
        c.assistantBubble = QColor(0x2a, 0x2d, 0x34);
        c.noticeText = QColor(0x9a, 0xa0, 0xaa);
        c.errorText = QColor(0xff, 0x8a, 0x80);
        c.kv = QColor(0x5b, 0x9b, 0xff);
        c.recurrent = QColor(0x4c, 0xd1, 0x96);
        c.fullAttention = QColor(0xff, 0xa8, 0x5b);
        c.chartBackground = QColor(0x17, 0x19, 0x1d);
        c.chartGrid = QColor(0x33, 0x36, 0x3d);
        c.chartText = QColor(0xc8, 0xcc, 0xd2);
        c.passageHighlight = QColor(0x5b, 0x4a, 0x1a);
    } else {
        c.accent = QColor(0x2f, 0x6f, 0xde);
        c.accentText = Qt::white;
        c.assistantBubble = QColor(0xee, 0xf0, 0xf4);
        c.noticeText = QColor(0x6b, 0x71, 0x7b);
        c.errorText = QColor(0xc6, 0x28, 0x28);
        c.kv = QColor(0x1f, 0x6f, 0xe0);
        c.recurrent = QColor(0x12, 0x9a, 0x62);
        c.fullAttention = QColor(0xe0, 0x6c, 0x00);
        c.chartBackground = Qt::white;
        c.chartGrid = QColor(0xe4, 0xe7, 0xec);
        c.chartText = QColor(0x3a, 0x3f, 0x47);
        c.passageHighlight = QColor(0xff, 0xee, 0xa8);
    }
    return c;
}

} // namespace Theme
