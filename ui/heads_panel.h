#pragma once
// What each attention head attends to, for the current document (DESIGN §4): a layers × heads
// heatmap of recency (the attention mass on the last k tokens), with the KV groups that a hybrid
// model serves by recurrent heads marked. Clicking a head shows its distance histogram and sink
// mass. The map exports as PNG and the numbers as CSV.
#include "engine_types.h"

#include <QImage>
#include <QWidget>

class QLabel;
class QChart;
class QChartView;
class QBarSet;
class QBarSeries;
class QBarCategoryAxis;
class QValueAxis;
class QPushButton;

class HeatmapWidget : public QWidget {
    Q_OBJECT
  public:
    explicit HeatmapWidget(QWidget *parent = nullptr);

    void setStats(const HeadStats &stats);
    const HeadStats &stats() const { return m_stats; }
    void setSelected(int layer, int head);
    int selectedLayer() const { return m_selLayer; }
    int selectedHead() const { return m_selHead; }

    // The colour of a recency value in [0, 1] (viridis: dark blue-violet → green → yellow; it
    // stays readable in grey and for red-green colour blindness).
    static QColor colorFor(double value);
    // Where a head's cell is drawn in a widget (or image) of `size`; null when out of range.
    QRect cellRect(int layer, int head, const QSize &size) const;
    // The map drawn at `size` (for export; the widget paints the same).
    QImage render(const QSize &size) const;
    QSize sizeHint() const override { return QSize(520, 520); }
    QSize minimumSizeHint() const override { return QSize(260, 200); }

  signals:
    void headClicked(int layer, int head);

  protected:
    void paintEvent(QPaintEvent *event) override;
    void mousePressEvent(QMouseEvent *event) override;
    bool event(QEvent *event) override;

  private:
    struct Geometry; // margins and cell sizes for one widget size
    Geometry geometry(const QSize &size) const;
    void paintMap(QPainter &p, const QSize &size) const;
    bool headAt(const QPoint &pos, int *layer, int *head) const;
    HeadStats m_stats;
    int m_selLayer = -1, m_selHead = -1;
};

class HeadsPanel : public QWidget {
    Q_OBJECT
  public:
    explicit HeadsPanel(QWidget *parent = nullptr);

    const HeadStats &stats() const { return m_map->stats(); }
    HeatmapWidget *heatmap() const { return m_map; }
    // One row per head: layer, head, kv_group, replaced, window, recency, sink, then the
    // distance bins (d0, d1, d2-3, ...).
    QString toCsv() const;
    bool exportCsv(const QString &path) const;
    // The heatmap at a size that gives every cell room (at least 24 px).
    bool exportPng(const QString &path) const;
    QString detailText() const;
    // Histogram shown for the selected head (bin masses).
    QVector<double> shownHistogram() const;

  public slots:
    void setStats(const HeadStats &stats);
    void clear();
    void selectHead(int layer, int head);
    void applyTheme();

  private slots:
    void exportPngInteractive();
    void exportCsvInteractive();

  private:
    HeatmapWidget *m_map;
    QLabel *m_caption, *m_detail;
    QChartView *m_histView;
    QChart *m_hist;
    QBarSeries *m_histSeries;
    QBarSet *m_histSet;
    QBarCategoryAxis *m_histX;
    QValueAxis *m_histY;
    QPushButton *m_png, *m_csv;
};
