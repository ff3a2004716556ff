#include "memory_panel.h"

#include "theme.h"

#include <QApplication>
#include <QLabel>
#include <QLocale>
#include <QPainter>
#include <QVBoxLayout>
#include <QtCharts/QBarSet>
#include <QtCharts/QChart>
#include <QtCharts/QChartView>
#include <QtCharts/QLegendMarker>
#include <QtCharts/QLineSeries>
#include <QtCharts/QStackedBarSeries>
#include <QtCharts/QValueAxis>

#include <algorithm>
#include <cmath>

namespace {

// A byte unit that keeps the axis numbers readable for the largest value shown.
struct Unit {
    double div;
    QString name;
};
Unit unitFor(double maxBytes) {
    if (maxBytes >= 1024.0 * 1024 * 1024 * 2) return {1024.0 * 1024 * 1024, QStringLiteral("GiB")};
    if (maxBytes >= 1024.0 * 1024 * 2) return {1024.0 * 1024, QStringLiteral("MiB")};
    return {1024.0, QStringLiteral("KiB")};
}

// Sets 0 … max on a value axis with round labels: the smallest step of 1, 2, 2.5 or 5 × 10^k
// that covers `maxValue` in at most 6 intervals.
void setNiceRange(QValueAxis *axis, double maxValue) {
    if (!(maxValue > 0)) maxValue = 1;
    const double p = std::pow(10.0, std::floor(std::log10(maxValue)));
    double step = 10 * p;
    for (double m : {0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0})
        if (std::ceil(maxValue / (m * p) - 1e-9) <= 6) {
            step = m * p;
            break;
        }
    const int n = std::max(1, int(std::ceil(maxValue / step - 1e-9)));
    axis->setRange(0, n * step);
    axis->setTickCount(n + 1);
    const double frac = step - std::floor(step);
    axis->setLabelFormat(frac < 1e-9                                          ? QStringLiteral("%.0f")
                         : std::abs(frac * 10 - std::round(frac * 10)) < 1e-9 ? QStringLiteral("%.1f")
                                                                              : QStringLiteral("%.2f"));
}

void styleChart(QChart *chart, const QString &title) {
    const Theme::Colors c = Theme::colors();
    chart->setTitle(title);
    chart->setBackgroundBrush(c.chartBackground);
    chart->setPlotAreaBackgroundVisible(false);
    chart->setBackgroundRoundness(6);
    chart->setMargins(QMargins(6, 6, 6, 6));
    chart->setTitleBrush(c.chartText);
    QFont tf = chart->titleFont();
    tf.setBold(true);
    tf.setPointSizeF(QFont().pointSizeF());
    chart->setTitleFont(tf);
    chart->legend()->setLabelColor(c.chartText);
    chart->legend()->setAlignment(Qt::AlignBottom);
    chart->setAnimationOptions(QChart::NoAnimation); // live data: animation would lag behind
}

void styleAxis(QValueAxis *axis, const QString &title) {
    const Theme::Colors c = Theme::colors();
    axis->setTitleText(title);
    axis->setTitleBrush(c.chartText);
    axis->setLabelsColor(c.chartText);
    axis->setGridLineColor(c.chartGrid);
    axis->setLinePenColor(c.chartGrid);
    axis->setMinorGridLineVisible(false);
    QFont f = axis->labelsFont();
    f.setPointSizeF(QFont().pointSizeF() * 0.85);
    axis->setLabelsFont(f);
    QFont tf = axis->titleFont();
    tf.setPointSizeF(QFont().pointSizeF() * 0.9);
    tf.setBold(false);
    axis->setTitleFont(tf);
}

QPen seriesPen(const QColor &c, bool dashed) {
    QPen p(c, 2.2);
    if (dashed) p.setStyle(Qt::DashLine);
    return p;
}

} // namespace

MemoryPanel::MemoryPanel(QWidget *parent) : QWidget(parent) {
    m_plan = new QLabel(
        tr("Open a document: the planner tells how much memory it needs before anything is read."));
    m_plan->setWordWrap(true);
    m_plan->setTextFormat(Qt::RichText);
    m_plan->setMargin(4);
    m_summary = new QLabel;
    m_summary->setWordWrap(true);
    m_summary->setTextFormat(Qt::RichText);
    m_summary->setMargin(4);

    m_timeline = new QChart;
    m_kv = new QLineSeries;
    m_kv->setName(tr("Attention KV cache"));
    m_rec = new QLineSeries;
    m_rec->setName(tr("Fixed-size state"));
    m_full = new QLineSeries;
    m_full->setName(tr("Full attention would use"));
    // Full attention last and dashed: where it coincides with the KV line (a model with no
    // replaced group) both stay visible.
    m_timeline->addSeries(m_kv);
    m_timeline->addSeries(m_rec);
    m_timeline->addSeries(m_full);
    m_tx = new QValueAxis;
    m_ty = new QValueAxis;
    m_timeline->addAxis(m_tx, Qt::AlignBottom);
    m_timeline->addAxis(m_ty, Qt::AlignLeft);
    for (QLineSeries *s : {m_kv, m_rec, m_full}) {
        s->attachAxis(m_tx);
        s->attachAxis(m_ty);
    }
    m_timelineView = new QChartView(m_timeline);
    m_timelineView->setRenderHint(QPainter::Antialiasing);
    m_timelineView->setMinimumHeight(220);

    m_layers = new QChart;
    m_layerKv = new QBarSet(tr("Attention KV"));
    m_layerRec = new QBarSet(tr("Fixed-size state"));
    m_layerBars = new QStackedBarSeries;
    m_layerBars->append(m_layerKv);
    m_layerBars->append(m_layerRec);
    m_layerBars->setBarWidth(0.75);
    m_layerFull = new QLineSeries;
    m_layerFull->setName(tr("Full attention"));
    m_layers->addSeries(m_layerBars);
    m_layers->addSeries(m_layerFull);
    m_lx = new QValueAxis;
    m_ly = new QValueAxis;
    m_lx->setLabelFormat(QStringLiteral("%d"));
    m_lx->setTickType(QValueAxis::TicksDynamic);
    m_lx->setTickAnchor(0);
    m_layers->addAxis(m_lx, Qt::AlignBottom);
    m_layers->addAxis(m_ly, Qt::AlignLeft);
    m_layerBars->attachAxis(m_lx);
    m_layerBars->attachAxis(m_ly);
    m_layerFull->attachAxis(m_lx);
    m_layerFull->attachAxis(m_ly);
    m_layersView = new QChartView(m_layers);
    m_layersView->setRenderHint(QPainter::Antialiasing);
    m_layersView->setMinimumHeight(200);

    auto *v = new QVBoxLayout(this);
    v->setContentsMargins(8, 8, 8, 8);
    v->setSpacing(6);
    v->addWidget(m_plan);
    v->addWidget(m_timelineView, 3);
    v->addWidget(m_summary);
    v->addWidget(m_layersView, 2);
    applyTheme();
    clear();
}

MemoryPanel::~MemoryPanel() = default;

QString MemoryPanel::planMessage(const MemoryPlan &p) {
    const QLocale loc;
    QString s = tr("<b>This document needs %1</b> for its %2 tokens (weights %3, cache %4).")
                    .arg(formatBytes(p.neededBytes), loc.toString(p.documentTokens),
                         formatBytes(p.neededBytes - p.cacheBytes), formatBytes(p.cacheBytes));
    if (p.maxTokensFit > 0) {
        s += QLatin1Char(' ');
        s += tr("Up to <b>%1 tokens</b> fit in the memory of this device (%2, %3 available).")
                 .arg(p.maxTokensFit >= 1000000000 ? tr("a billion") : loc.toString(p.maxTokensFit),
                      p.device.toUpper(), formatBytes(p.availableBytes));
    }
    s += QLatin1Char(' ');
    if (p.wholeDocument) {
        s += tr("It fits the context of %1 tokens: the whole document is read once, and every question "
                "reuses it.")
                 .arg(loc.toString(p.contextLength));
    } else {
        s += tr("The context holds %1 tokens (%2% of the document): for each question the most relevant of "
                "its "
                "%3 passages are read.")
                 .arg(loc.toString(p.contextLength))
                 .arg(p.fractionInContext * 100, 0, 'f', p.fractionInContext < 0.1 ? 1 : 0)
                 .arg(loc.toString(p.passagesTotal));
    }
    if (p.trainedContext > 0 && p.documentTokens > p.trainedContext)
        s += QLatin1Char(' ') +
             tr("The model was trained on contexts of up to %1 tokens.").arg(loc.toString(p.trainedContext));
    return s;
}

QString MemoryPanel::planText() const {
    return m_plan->text();
}
QString MemoryPanel::summaryText() const {
    return m_summary->text();
}

void MemoryPanel::setPlan(const MemoryPlan &plan) {
    m_plan->setText(planMessage(plan));
}

void MemoryPanel::addSample(const MemorySample &sample) {
    // The context was emptied or cut back (a new session, passages for another question): the
    // timeline shows the growth of the context as it is now.
    if (!m_samples.isEmpty() && sample.tokens < m_samples.last().tokens) m_samples.clear();
    if (!m_samples.isEmpty() && sample.tokens == m_samples.last().tokens)
        m_samples.last() = sample;
    else
        m_samples.push_back(sample);
    m_latest = sample;
    if (!sample.layers.isEmpty()) m_haveLayers = true;
    rebuild();
    rebuildLayers();
}

void MemoryPanel::setHistory(const QVector<MemorySample> &samples) {
    m_samples.clear();
    for (const MemorySample &s : samples) {
        if (!m_samples.isEmpty() && s.tokens < m_samples.last().tokens) m_samples.clear();
        m_samples.push_back(s);
    }
    if (!m_samples.isEmpty()) m_latest = m_samples.last();
    rebuild();
}

void MemoryPanel::clear() {
    m_samples.clear();
    m_latest = MemorySample();
    m_haveLayers = false;
    m_plan->setText(
        tr("Open a document: the planner tells how much memory it needs before anything is read."));
    rebuild();
    rebuildLayers();
}

QVector<QPointF> MemoryPanel::points(Series s) const {
    QVector<QPointF> out;
    for (const MemorySample &m : m_samples) {
        const qint64 v = s == Series::Kv          ? m.kvUsedBytes
                         : s == Series::FixedState ? m.fixedStateBytes
                                                  : m.fullAttentionUsedBytes;
        out.push_back(QPointF(double(m.tokens), double(v)));
    }
    return out;
}

QVector<double> MemoryPanel::layerValues(Series s) const {
    QVector<double> out;
    for (const LayerMemory &l : m_latest.layers)
        out.push_back(double(s == Series::Kv          ? l.kvUsedBytes
                             : s == Series::FixedState ? l.fixedStateBytes
                                                      : l.fullAttentionUsedBytes));
    return out;
}

void MemoryPanel::rebuild() {
    double maxBytes = 0, maxTokens = 0;
    for (const MemorySample &m : m_samples) {
        maxBytes = std::max(
            {maxBytes, double(m.kvUsedBytes), double(m.fixedStateBytes), double(m.fullAttentionUsedBytes)});
        maxTokens = std::max(maxTokens, double(m.tokens));
    }
    const Unit u = unitFor(maxBytes);
    QList<QPointF> kv, rec, full;
    // Thousands of samples over a long conversation: keep about 1500 points per line.
    const int step = std::max(1, int(m_samples.size() / 1500));
    for (int i = 0; i < m_samples.size(); i += step) {
        const MemorySample &m = m_samples[i];
        kv.push_back({double(m.tokens), m.kvUsedBytes / u.div});
        rec.push_back({double(m.tokens), m.fixedStateBytes / u.div});
        full.push_back({double(m.tokens), m.fullAttentionUsedBytes / u.div});
    }
    if (!m_samples.isEmpty() && (m_samples.size() - 1) % step != 0) {
        const MemorySample &m = m_samples.last();
        kv.push_back({double(m.tokens), m.kvUsedBytes / u.div});
        rec.push_back({double(m.tokens), m.fixedStateBytes / u.div});
        full.push_back({double(m.tokens), m.fullAttentionUsedBytes / u.div});
    }
    m_kv->replace(kv);
    m_rec->replace(rec);
    m_full->replace(full);
    setNiceRange(m_tx, std::max(maxTokens, 16.0));
    setNiceRange(m_ty, std::max(maxBytes / u.div, 1.0));
    m_tx->setTitleText(tr("tokens in the context"));
    m_ty->setTitleText(u.name);
    m_timeline->setTitle(tr("Memory over tokens processed"));

    if (m_samples.isEmpty()) {
        m_summary->setText(tr("No tokens read yet."));
        return;
    }
    const MemorySample &m = m_samples.last();
    const QLocale loc;
    QString s = tr("After <b>%1 tokens</b>: attention KV <b>%2</b>")
                    .arg(loc.toString(m.tokens), formatBytes(m.kvUsedBytes));
    s += tr(", fixed-size state <b>%1</b>").arg(formatBytes(m.fixedStateBytes));
    if (m.windowBytes >= 0 && m.fixedStateBytes > 0)
        s += tr(" (recurrent states %1, window rows %2)")
                 .arg(formatBytes(m.fixedStateBytes - m.windowBytes), formatBytes(m.windowBytes));
    s += tr(", full attention would use <b>%1</b>").arg(formatBytes(m.fullAttentionUsedBytes));
    const qint64 used = m.kvUsedBytes + m.fixedStateBytes;
    if (m.fullAttentionUsedBytes > 0 && used < m.fullAttentionUsedBytes)
        s += tr(" (%1% saved)")
                 .arg(100.0 * (1.0 - double(used) / double(m.fullAttentionUsedBytes)), 0, 'f', 0);
    s += QStringLiteral(".");
    if (m.kvAllocatedBytes > 0)
        s += tr(" Allocated: KV %1 for %2 tokens, weights %3.")
                 .arg(formatBytes(m.kvAllocatedBytes), loc.toString(m.contextLength),
                      formatBytes(m.weightsBytes));
    m_summary->setText(s);
}

void MemoryPanel::rebuildLayers() {
    const int n = int(m_latest.layers.size());
    double maxBytes = 0;
    for (const LayerMemory &l : m_latest.layers)
        maxBytes =
            std::max({maxBytes, double(l.kvUsedBytes + l.fixedStateBytes), double(l.fullAttentionUsedBytes)});
    const Unit u = unitFor(maxBytes);
    QList<qreal> kv, rec;
    QList<QPointF> full;
    for (int i = 0; i < n; ++i) {
        const LayerMemory &l = m_latest.layers[i];
        kv.push_back(l.kvUsedBytes / u.div);
        rec.push_back(l.fixedStateBytes / u.div);
        // A step line: the full-attention level across the width of each bar.
        full.push_back({i - 0.4, l.fullAttentionUsedBytes / u.div});
        full.push_back({i + 0.4, l.fullAttentionUsedBytes / u.div});
    }
    if (m_layerKv->count() != n) {
        m_layerKv->remove(0, m_layerKv->count());
        m_layerRec->remove(0, m_layerRec->count());
        m_layerKv->append(kv);
        m_layerRec->append(rec);
    } else {
        for (int i = 0; i < n; ++i) {
            m_layerKv->replace(i, kv[i]);
            m_layerRec->replace(i, rec[i]);
        }
    }
    m_layerFull->replace(full);
    m_lx->setRange(-0.6, std::max(n, 1) - 0.4);
    m_lx->setTickInterval(n > 40 ? 10 : n > 16 ? 5 : n > 8 ? 2 : 1);
    m_lx->setTitleText(tr("layer"));
    setNiceRange(m_ly, std::max(maxBytes / u.div, 1.0));
    m_ly->setTitleText(u.name);
    m_layers->setTitle(m_haveLayers ? tr("Per layer, now") : tr("Per layer (appears while reading)"));
}

void MemoryPanel::applyTheme() {
    const Theme::Colors c = Theme::colors();
    styleChart(m_timeline, tr("Memory over tokens processed"));
    styleChart(m_layers, tr("Per layer, now"));
    styleAxis(m_tx, tr("tokens in the context"));
    styleAxis(m_ty, QStringLiteral("MiB"));
    styleAxis(m_lx, tr("layer"));
    styleAxis(m_ly, QStringLiteral("MiB"));
    m_kv->setPen(seriesPen(c.kv, false));
    m_rec->setPen(seriesPen(c.recurrent, false));
    m_full->setPen(seriesPen(c.fullAttention, true));
    m_layerKv->setColor(c.kv);
    m_layerKv->setBorderColor(c.kv);
    m_layerRec->setColor(c.recurrent);
    m_layerRec->setBorderColor(c.recurrent);
    m_layerFull->setPen(seriesPen(c.fullAttention, true));
    m_timelineView->setBackgroundBrush(
        QApplication::palette().window()); // the new palette: ours may not be updated yet
    m_layersView->setBackgroundBrush(
        QApplication::palette().window()); // the new palette: ours may not be updated yet
    rebuild();
    rebuildLayers();
}

bool MemoryPanel::exportPng(const QString &path, const QSize &size) {
    const QSize old = this->size();
    resize(size);
    const QPixmap pm = grab();
    resize(old);
    return pm.save(path, "PNG");
}
