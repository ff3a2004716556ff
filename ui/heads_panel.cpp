#include "heads_panel.h"

#include "theme.h"

#include <QApplication>
#include <QFile>
#include <QFileDialog>
#include <QHBoxLayout>
#include <QHelpEvent>
#include <QLabel>
#include <QMessageBox>
#include <QMouseEvent>
#include <QPainter>
#include <QPushButton>
#include <QSplitter>
#include <QTextStream>
#include <QToolTip>
#include <QVBoxLayout>
#include <QtCharts/QBarCategoryAxis>
#include <QtCharts/QBarSeries>
#include <QtCharts/QBarSet>
#include <QtCharts/QChart>
#include <QtCharts/QChartView>
#include <QtCharts/QValueAxis>

#include <algorithm>
#include <cmath>

// ---- heatmap -----------------------------------------------------------------------------------

struct HeatmapWidget::Geometry {
    int left = 0, top = 0; // the grid's top-left corner
    double cellW = 0, cellH = 0;
    int groupGap = 0;   // extra space between KV groups
    int legendX = 0;    // colour bar
    int labelEvery = 1; // layer labels on every n-th row
    bool valid = false;
};

HeatmapWidget::HeatmapWidget(QWidget *parent) : QWidget(parent) {
    setMouseTracking(true);
    setSizePolicy(QSizePolicy::Expanding, QSizePolicy::Expanding);
}

void HeatmapWidget::setStats(const HeadStats &stats) {
    m_stats = stats;
    if (m_selLayer >= stats.nLayer || m_selHead >= stats.nHead) m_selLayer = m_selHead = -1;
    update();
}

void HeatmapWidget::setSelected(int layer, int head) {
    m_selLayer = layer;
    m_selHead = head;
    update();
}

QColor HeatmapWidget::colorFor(double v) {
    // viridis, sampled at 9 points (matplotlib's _viridis_data), interpolated in RGB.
    static const int stops[9][3] = {{68, 1, 84},    {71, 44, 122},  {59, 81, 139},
                                    {44, 113, 142}, {33, 144, 141}, {39, 173, 129},
                                    {92, 200, 99},  {170, 220, 50}, {253, 231, 37}};
    if (!std::isfinite(v)) v = 0;
    v = std::clamp(v, 0.0, 1.0) * 8.0;
    const int i = std::min(7, int(v));
    const double t = v - i;
    auto mix = [&](int c) { return int(std::lround(stops[i][c] + (stops[i + 1][c] - stops[i][c]) * t)); };
    return QColor(mix(0), mix(1), mix(2));
}

HeatmapWidget::Geometry HeatmapWidget::geometry(const QSize &size) const {
    Geometry g;
    if (m_stats.isEmpty()) return g;
    const QFontMetrics fm(font());
    const int groups = std::max(1, m_stats.nHeadKv);
    g.groupGap = m_stats.groupSize() > 1 ? 4 : 0;
    g.left = fm.horizontalAdvance(QStringLiteral("L000")) + 10;
    g.top = fm.height() * 2 + 10;
    const int legendW = fm.horizontalAdvance(QStringLiteral("0.00")) + 34;
    const int availW = size.width() - g.left - legendW - 8 - g.groupGap * (groups - 1);
    const int availH = size.height() - g.top - 8;
    if (availW <= 0 || availH <= 0) return g;
    g.cellW = double(availW) / m_stats.nHead;
    g.cellH = double(availH) / m_stats.nLayer;
    // Cells no wider than 2.5 times their height (and no taller than 1.2 times their width)
    // keep the map a map on very wide or tall panels.
    g.cellW = std::min(g.cellW, g.cellH * 2.5);
    g.cellH = std::min(g.cellH, g.cellW * 1.2);
    g.legendX = g.left + int(std::ceil(g.cellW * m_stats.nHead)) + g.groupGap * (groups - 1) + 16;
    g.labelEvery = std::max(1, int(std::ceil(fm.height() / std::max(1.0, g.cellH))));
    g.valid = g.cellW >= 2 && g.cellH >= 2;
    return g;
}

QRect HeatmapWidget::cellRect(int layer, int head, const QSize &size) const {
    const Geometry g = geometry(size);
    if (!g.valid || layer < 0 || head < 0 || layer >= m_stats.nLayer || head >= m_stats.nHead) return QRect();
    const int x0 = g.left + int(std::lround(head * g.cellW)) + m_stats.groupOf(head) * g.groupGap;
    const int x1 = g.left + int(std::lround((head + 1) * g.cellW)) + m_stats.groupOf(head) * g.groupGap;
    const int y0 = g.top + int(std::lround(layer * g.cellH));
    const int y1 = g.top + int(std::lround((layer + 1) * g.cellH));
    return QRect(QPoint(x0, y0), QPoint(x1 - 2, y1 - 2)); // a 1-2 px gap between cells
}

void HeatmapWidget::paintMap(QPainter &p, const QSize &size) const {
    p.fillRect(QRect(QPoint(0, 0), size), palette().window());
    const Geometry g = geometry(size);
    p.setPen(palette().color(QPalette::WindowText));
    if (!g.valid) {
        p.setPen(palette().color(QPalette::PlaceholderText));
        p.drawText(
            QRect(QPoint(0, 0), size).adjusted(20, 20, -20, -20), Qt::AlignCenter | Qt::TextWordWrap,
            tr("Head statistics appear after a document is read.\n\nEach cell is one attention head: bright "
               "when it attends mostly to the last few tokens, dark when it looks far back."));
        return;
    }
    const QFontMetrics fm(p.font());
    // Column headers: KV group numbers above their heads, head numbers above each column.
    QFont small = p.font();
    small.setPointSizeF(p.font().pointSizeF() * 0.85);
    p.setFont(small);
    const QFontMetrics sm(small);
    const bool everyHead = g.cellW >= sm.horizontalAdvance(QStringLiteral("00")) + 2;
    for (int h = 0; h < m_stats.nHead; ++h) {
        const QRect c = cellRect(0, h, size);
        if (everyHead || h % 4 == 0)
            p.drawText(QRect(c.left(), g.top - sm.height() - 3, c.width(), sm.height()), Qt::AlignCenter,
                       QString::number(h));
    }
    if (m_stats.groupSize() > 1) {
        p.setPen(palette().color(QPalette::PlaceholderText));
        for (int grp = 0; grp < m_stats.nHeadKv; ++grp) {
            const QRect a = cellRect(0, grp * m_stats.groupSize(), size);
            const QRect b = cellRect(0, (grp + 1) * m_stats.groupSize() - 1, size);
            const QRect span(a.left(), g.top - 2 * sm.height() - 6, b.right() - a.left(), sm.height());
            p.drawText(span, Qt::AlignCenter, tr("group %1").arg(grp));
            p.drawLine(span.left() + 2, span.bottom() + 2, span.right() - 2, span.bottom() + 2);
        }
    }
    // Row headers.
    p.setPen(palette().color(QPalette::WindowText));
    for (int l = 0; l < m_stats.nLayer; ++l) {
        if (l % g.labelEvery != 0) continue;
        const QRect c = cellRect(l, 0, size);
        p.drawText(QRect(0, c.top(), g.left - 8, c.height()), Qt::AlignRight | Qt::AlignVCenter,
                   QStringLiteral("L%1").arg(l));
    }
    // Cells; replaced groups hatched.
    for (int l = 0; l < m_stats.nLayer; ++l)
        for (int h = 0; h < m_stats.nHead; ++h) {
            const QRect c = cellRect(l, h, size);
            const QColor col = colorFor(m_stats.recencyAt(l, h));
            p.fillRect(c, col);
            if (m_stats.isReplaced(l, h)) {
                const QColor ink = col.lightness() > 140 ? QColor(0, 0, 0, 150) : QColor(255, 255, 255, 170);
                p.fillRect(c, QBrush(ink, Qt::BDiagPattern));
            }
        }
    // Outline every replaced group as one block so it reads as a unit.
    p.setRenderHint(QPainter::Antialiasing, false);
    for (int l = 0; l < m_stats.nLayer; ++l)
        for (int grp = 0; grp < m_stats.nHeadKv; ++grp) {
            if (!m_stats.replaced.value(l * m_stats.nHeadKv + grp)) continue;
            const QRect a = cellRect(l, grp * m_stats.groupSize(), size);
            const QRect b = cellRect(l, (grp + 1) * m_stats.groupSize() - 1, size);
            p.setPen(QPen(palette().color(QPalette::WindowText), 1.5));
            p.setBrush(Qt::NoBrush);
            p.drawRect(QRect(a.topLeft(), b.bottomRight()).adjusted(-1, -1, 1, 1));
        }
    if (m_selLayer >= 0 && m_selHead >= 0) {
        p.setPen(QPen(palette().color(QPalette::Highlight), 3));
        p.setBrush(Qt::NoBrush);
        p.drawRect(cellRect(m_selLayer, m_selHead, size).adjusted(-2, -2, 2, 2));
    }
    // Colour bar.
    const int barTop = g.top, barH = int(std::lround(g.cellH * m_stats.nLayer)) - 2;
    const QRect bar(g.legendX, barTop, 12, barH);
    QLinearGradient grad(bar.bottomLeft(), bar.topLeft());
    for (int i = 0; i <= 8; ++i)
        grad.setColorAt(i / 8.0, colorFor(i / 8.0));
    p.fillRect(bar, grad);
    p.setPen(palette().color(QPalette::WindowText));
    for (double v : {0.0, 0.5, 1.0}) {
        const int y = bar.bottom() - int(std::lround(v * (bar.height() - 1)));
        p.drawText(QRect(bar.right() + 4, y - sm.height() / 2, 60, sm.height()),
                   Qt::AlignLeft | Qt::AlignVCenter, QString::number(v, 'f', 1));
    }
    p.setFont(font());
    Q_UNUSED(fm);
}

void HeatmapWidget::paintEvent(QPaintEvent *) {
    QPainter p(this);
    paintMap(p, size());
}

QImage HeatmapWidget::render(const QSize &size) const {
    QImage img(size, QImage::Format_ARGB32_Premultiplied);
    img.fill(palette().color(QPalette::Window));
    QPainter p(&img);
    p.setFont(font());
    paintMap(p, size);
    return img;
}

bool HeatmapWidget::headAt(const QPoint &pos, int *layer, int *head) const {
    for (int l = 0; l < m_stats.nLayer; ++l)
        for (int h = 0; h < m_stats.nHead; ++h)
            if (cellRect(l, h, size()).adjusted(0, 0, 2, 2).contains(pos)) {
                *layer = l, *head = h;
                return true;
            }
    return false;
}

void HeatmapWidget::mousePressEvent(QMouseEvent *event) {
    int l, h;
    if (event->button() == Qt::LeftButton && headAt(event->position().toPoint(), &l, &h)) {
        setSelected(l, h);
        emit headClicked(l, h);
    }
}

bool HeatmapWidget::event(QEvent *event) {
    if (event->type() == QEvent::ToolTip) {
        auto *help = static_cast<QHelpEvent *>(event);
        int l, h;
        if (headAt(help->pos(), &l, &h)) {
            QString tip = tr("Layer %1, head %2 (KV group %3)\nrecency(%4) %5 · sink %6")
                              .arg(l)
                              .arg(h)
                              .arg(m_stats.groupOf(h))
                              .arg(m_stats.window)
                              .arg(m_stats.recencyAt(l, h), 0, 'f', 3)
                              .arg(m_stats.sinkAt(l, h), 0, 'f', 3);
            if (m_stats.isReplaced(l, h)) tip += tr("\nreplaced: served by a recurrent head");
            QToolTip::showText(help->globalPos(), tip, this);
        } else {
            QToolTip::hideText();
        }
        return true;
    }
    return QWidget::event(event);
}

// ---- panel -------------------------------------------------------------------------------------

namespace {
// Axis labels that fit under a bar: the lower bound of each distance bin ("0", "1", "2", "4",
// … "1k", "2k"); the bins double, the tooltip and the CSV give the full ranges.
QString shortBinLabel(int bin) {
    const qint64 lo = bin == 0 ? 0 : qint64(1) << (bin - 1);
    if (lo >= 1 << 20) return QStringLiteral("%1M").arg(lo >> 20);
    if (lo >= 1024) return QStringLiteral("%1k").arg(lo >> 10);
    return QString::number(lo);
}
} // namespace

HeadsPanel::HeadsPanel(QWidget *parent) : QWidget(parent) {
    m_caption = new QLabel;
    m_caption->setWordWrap(true);
    m_caption->setTextFormat(Qt::RichText);
    m_caption->setMargin(4);
    m_map = new HeatmapWidget;
    m_detail = new QLabel;
    m_detail->setWordWrap(true);
    m_detail->setTextFormat(Qt::RichText);
    m_detail->setMargin(4);

    m_hist = new QChart;
    m_histSet = new QBarSet(tr("attention mass"));
    m_histSeries = new QBarSeries;
    m_histSeries->append(m_histSet);
    m_histSeries->setBarWidth(0.8);
    m_hist->addSeries(m_histSeries);
    m_histX = new QBarCategoryAxis;
    m_histY = new QValueAxis;
    m_histY->setRange(0, 1);
    m_histY->setLabelFormat(QStringLiteral("%.1f"));
    m_histY->setTickCount(6);
    m_hist->addAxis(m_histX, Qt::AlignBottom);
    m_hist->addAxis(m_histY, Qt::AlignLeft);
    m_histSeries->attachAxis(m_histX);
    m_histSeries->attachAxis(m_histY);
    m_hist->legend()->hide();
    m_histView = new QChartView(m_hist);
    m_histView->setRenderHint(QPainter::Antialiasing);
    m_histView->setMinimumHeight(180);

    m_png = new QPushButton(tr("Export PNG…"));
    m_csv = new QPushButton(tr("Export CSV…"));
    connect(m_png, &QPushButton::clicked, this, &HeadsPanel::exportPngInteractive);
    connect(m_csv, &QPushButton::clicked, this, &HeadsPanel::exportCsvInteractive);
    auto *buttons = new QHBoxLayout;
    buttons->addStretch();
    buttons->addWidget(m_png);
    buttons->addWidget(m_csv);

    auto *lower = new QWidget;
    auto *lv = new QVBoxLayout(lower);
    lv->setContentsMargins(0, 0, 0, 0);
    lv->addWidget(m_detail);
    lv->addWidget(m_histView, 1);
    auto *split = new QSplitter(Qt::Vertical);
    split->addWidget(m_map);
    split->addWidget(lower);
    split->setStretchFactor(0, 3);
    split->setStretchFactor(1, 2);
    split->setChildrenCollapsible(false);

    auto *v = new QVBoxLayout(this);
    v->setContentsMargins(8, 8, 8, 8);
    v->addWidget(m_caption);
    v->addWidget(split, 1);
    v->addLayout(buttons);

    connect(m_map, &HeatmapWidget::headClicked, this, &HeadsPanel::selectHead);
    applyTheme();
    clear();
}

void HeadsPanel::setStats(const HeadStats &stats) {
    const int l = m_map->selectedLayer(), h = m_map->selectedHead();
    m_map->setStats(stats);
    const bool any = !stats.isEmpty();
    m_png->setEnabled(any);
    m_csv->setEnabled(any);
    if (!any) {
        m_caption->setText(tr("<b>Recency of every attention head</b> — appears after a document is read."));
        selectHead(-1, -1);
        return;
    }
    int replaced = 0;
    for (quint8 r : stats.replaced)
        replaced += r ? 1 : 0;
    QString cap = tr("<b>Recency of every attention head</b>: the share of attention on the last %1 tokens, "
                     "averaged over the document (%2 layers × %3 heads, %4 KV groups per layer).")
                      .arg(stats.window)
                      .arg(stats.nLayer)
                      .arg(stats.nHead)
                      .arg(stats.nHeadKv);
    cap += replaced > 0 ? tr(" Hatched and outlined: the %1 groups served by recurrent heads.").arg(replaced)
                        : tr(" No group is replaced in this model.");
    cap += tr(" Click a head for its distances.");
    m_caption->setText(cap);
    // Keep the selection across live updates; start with the most recent-looking head.
    if (l >= 0 && l < stats.nLayer && h >= 0 && h < stats.nHead) {
        selectHead(l, h);
    } else {
        int bl = 0, bh = 0;
        for (int a = 0; a < stats.nLayer; ++a)
            for (int b = 0; b < stats.nHead; ++b)
                if (stats.recencyAt(a, b) > stats.recencyAt(bl, bh)) bl = a, bh = b;
        selectHead(bl, bh);
    }
}

void HeadsPanel::clear() {
    setStats(HeadStats());
}

void HeadsPanel::selectHead(int layer, int head) {
    const HeadStats &s = m_map->stats();
    m_map->setSelected(layer, head);
    m_histSet->remove(0, m_histSet->count());
    m_histX->clear();
    if (s.isEmpty() || layer < 0 || head < 0 || layer >= s.nLayer || head >= s.nHead) {
        m_detail->setText(tr("No head selected."));
        m_hist->setTitle(tr("Distance histogram"));
        return;
    }
    QStringList cats;
    double top = 0;
    for (int b = 0; b < s.nBins; ++b) {
        cats << shortBinLabel(b);
        m_histSet->append(s.histAt(layer, head, b));
        top = std::max(top, s.histAt(layer, head, b));
    }
    m_histX->append(cats);
    m_histY->setRange(0, top > 0.5 ? 1.0 : top > 0.2 ? 0.5 : 0.25);
    m_hist->setTitle(tr("Layer %1, head %2: where its attention goes").arg(layer).arg(head));
    QString d = tr("<b>Layer %1, head %2</b> (KV group %3%4): recency(%5) <b>%6</b> · sink mass (first "
                   "token) <b>%7</b>")
                    .arg(layer)
                    .arg(head)
                    .arg(s.groupOf(head))
                    .arg(s.isReplaced(layer, head) ? tr(", replaced") : QString())
                    .arg(s.window)
                    .arg(s.recencyAt(layer, head), 0, 'f', 3)
                    .arg(s.sinkAt(layer, head), 0, 'f', 3);
    m_detail->setText(d);
}

QString HeadsPanel::detailText() const {
    return m_detail->text();
}

QVector<double> HeadsPanel::shownHistogram() const {
    QVector<double> v;
    for (int i = 0; i < m_histSet->count(); ++i)
        v.push_back(m_histSet->at(i));
    return v;
}

QString HeadsPanel::toCsv() const {
    const HeadStats &s = m_map->stats();
    QString out;
    QTextStream t(&out);
    t << "layer,head,kv_group,replaced,window,recency,sink";
    for (int b = 0; b < s.nBins; ++b) {
        QString label = HeadStats::binLabel(b);
        label.replace(QChar(0x2013), QLatin1Char('-'));
        t << ",d" << label;
    }
    t << "\n";
    for (int l = 0; l < s.nLayer; ++l)
        for (int h = 0; h < s.nHead; ++h) {
            t << l << ',' << h << ',' << s.groupOf(h) << ',' << (s.isReplaced(l, h) ? 1 : 0) << ','
              << s.window << ',' << QString::number(s.recencyAt(l, h), 'f', 6) << ','
              << QString::number(s.sinkAt(l, h), 'f', 6);
            for (int b = 0; b < s.nBins; ++b)
                t << ',' << QString::number(s.histAt(l, h, b), 'f', 6);
            t << "\n";
        }
    return out;
}

bool HeadsPanel::exportCsv(const QString &path) const {
    QFile f(path);
    if (!f.open(QIODevice::WriteOnly | QIODevice::Truncate | QIODevice::Text)) return false;
    const QByteArray bytes = toCsv().toUtf8();
    return f.write(bytes) == bytes.size();
}

bool HeadsPanel::exportPng(const QString &path) const {
    const HeadStats &s = m_map->stats();
    if (s.isEmpty()) return false;
    const int cell = 28;
    const QSize size(std::max(480, 120 + s.nHead * (cell + 2) + s.nHeadKv * 4 + 80),
                     std::max(240, 70 + s.nLayer * (cell + 2)));
    return m_map->render(size).save(path, "PNG");
}

void HeadsPanel::exportPngInteractive() {
    const QString path = QFileDialog::getSaveFileName(this, tr("Export Heatmap"), QStringLiteral("heads.png"),
                                                      tr("PNG image (*.png)"));
    if (!path.isEmpty() && !exportPng(path))
        QMessageBox::warning(this, tr("Export"), tr("Could not write %1.").arg(path));
}

void HeadsPanel::exportCsvInteractive() {
    const QString path = QFileDialog::getSaveFileName(this, tr("Export Head Statistics"),
                                                      QStringLiteral("heads.csv"), tr("CSV (*.csv)"));
    if (!path.isEmpty() && !exportCsv(path))
        QMessageBox::warning(this, tr("Export"), tr("Could not write %1.").arg(path));
}

void HeadsPanel::applyTheme() {
    const Theme::Colors c = Theme::colors();
    m_hist->setBackgroundBrush(c.chartBackground);
    m_hist->setBackgroundRoundness(6);
    m_hist->setTitleBrush(c.chartText);
    m_hist->setAnimationOptions(QChart::NoAnimation);
    m_hist->setMargins(QMargins(6, 6, 6, 6));
    for (QAbstractAxis *a : {static_cast<QAbstractAxis *>(m_histX), static_cast<QAbstractAxis *>(m_histY)}) {
        a->setLabelsColor(c.chartText);
        a->setGridLineColor(c.chartGrid);
        a->setLinePenColor(c.chartGrid);
        a->setTitleBrush(c.chartText);
        QFont f = a->labelsFont();
        f.setPointSizeF(QFont().pointSizeF() * 0.85);
        a->setLabelsFont(f);
    }
    m_histY->setTitleText(tr("share"));
    m_histX->setTitleText(tr("tokens back (bins from 0, 1, 2, 4, … doubling)"));
    m_histX->setTitleBrush(c.chartText);
    QFont tf = m_histX->titleFont();
    tf.setPointSizeF(QFont().pointSizeF() * 0.85);
    tf.setBold(false);
    m_histX->setTitleFont(tf);
    m_histY->setTitleFont(tf);
    m_histSet->setColor(c.kv);
    m_histSet->setBorderColor(c.kv);
    m_histView->setBackgroundBrush(
        QApplication::palette().window()); // the new palette: ours may not be updated yet
    m_map->update();
}
