#pragma once
// Where the memory goes (QtCharts), live while a document is read and an answer generated:
//  * the planner's answer before reading ("this document needs X MiB; up to N tokens fit"),
//  * over tokens in the context: attention KV cache in use, recurrent (fixed-size) state, and
//    what full attention would hold for the same tokens,
//  * per layer: the same split, for the latest sample.
// Values arrive as MemorySample / MemoryPlan from the worker's signals.
#include "engine_types.h"

#include <QWidget>

class QLabel;
class QChart;
class QChartView;
class QLineSeries;
class QValueAxis;
class QBarSet;
class QStackedBarSeries;

class MemoryPanel : public QWidget {
    Q_OBJECT
  public:
    enum class Series { Kv, FixedState, FullAttention };

    explicit MemoryPanel(QWidget *parent = nullptr);
    ~MemoryPanel() override;

    // The sentence shown above the charts for a plan.
    static QString planMessage(const MemoryPlan &plan);
    QString planText() const;
    QString summaryText() const;
    int sampleCount() const { return int(m_samples.size()); }
    // Points of a timeline series in (tokens, bytes); for tests and export.
    QVector<QPointF> points(Series s) const;
    // Latest per-layer values in bytes: KV, recurrent, full attention.
    QVector<double> layerValues(Series s) const;
    bool exportPng(const QString &path, const QSize &size = QSize(1000, 760));

  public slots:
    void setPlan(const MemoryPlan &plan);
    void addSample(const MemorySample &sample);
    // Samples stored with a reopened session (totals only; the layer chart waits for live data).
    void setHistory(const QVector<MemorySample> &samples);
    void clear();
    // Re-reads Theme::colors() (after a palette change).
    void applyTheme();

  private:
    void rebuild();
    void rebuildLayers();
    QLabel *m_plan, *m_summary;
    QChartView *m_timelineView, *m_layersView;
    QChart *m_timeline, *m_layers;
    QLineSeries *m_kv, *m_rec, *m_full;
    QValueAxis *m_tx, *m_ty;
    QStackedBarSeries *m_layerBars;
    QBarSet *m_layerKv, *m_layerRec;
    QLineSeries *m_layerFull;
    QValueAxis *m_lx, *m_ly;
    QVector<MemorySample> m_samples; // the current context's growth (restarts when it shrinks)
    MemorySample m_latest;
    bool m_haveLayers = false;
};
