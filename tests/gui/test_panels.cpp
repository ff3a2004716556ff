// The memory and heads panels: data in, then what they show, paint and export is checked —
// series points, the planner's sentence, the heatmap's pixel colours, the CSV text.
#include "heads_panel.h"
#include "memory_panel.h"
#include "theme.h"

#include <QFile>
#include <QImage>
#include <QTemporaryDir>
#include <QTest>

namespace {

MemorySample sample(qint64 tokens, int layers = 4) {
    MemorySample s;
    s.tokens = tokens;
    s.contextLength = 4096;
    s.weightsBytes = 90 << 20;
    s.kvAllocatedBytes = 4096 * 1024;
    s.kvUsedBytes = tokens * 1024;
    s.fixedStateBytes = 64 * 1024;
    s.windowBytes = 16 * 1024; // of it
    s.fullAttentionUsedBytes = tokens * 2048;
    for (int l = 0; l < layers; ++l) {
        LayerMemory m;
        m.attentionGroups = 1;
        m.replacedGroups = l % 2;
        m.kvUsedBytes = tokens * 256;
        m.fixedStateBytes = l % 2 ? 32 * 1024 : 0;
        m.fullAttentionUsedBytes = tokens * 512;
        s.layers.push_back(m);
    }
    return s;
}

// 3 layers × 4 heads, 2 KV groups of 2 heads; group 1 of layer 2 replaced.
HeadStats heads() {
    HeadStats h;
    h.nLayer = 3;
    h.nHead = 4;
    h.nHeadKv = 2;
    h.nBins = 4;
    h.window = 32;
    for (int l = 0; l < 3; ++l)
        for (int k = 0; k < 4; ++k) {
            h.recency.push_back((l * 4 + k) / 11.0); // 0 … 1 across the map
            h.sink.push_back(0.01 * (l * 4 + k));
            const double near = (l * 4 + k) / 11.0;
            h.hist << near * 0.5 << near * 0.5 << (1 - near) * 0.5 << (1 - near) * 0.5;
        }
    h.replaced = {0, 0, 0, 0, 0, 1};
    return h;
}

bool closeColor(QRgb a, const QColor &b, int tol = 3) {
    return std::abs(qRed(a) - b.red()) <= tol && std::abs(qGreen(a) - b.green()) <= tol &&
           std::abs(qBlue(a) - b.blue()) <= tol;
}

} // namespace

class TestPanels : public QObject {
    Q_OBJECT
  private:
    QTemporaryDir m_dir;

  private slots:
    void initTestCase() {
        Theme::apply(QStringLiteral("light"));
        QVERIFY(m_dir.isValid());
    }

    void memoryPlanMessage() {
        MemoryPlan p;
        p.device = QStringLiteral("cpu");
        p.documentTokens = 171234;
        p.neededBytes = qint64(3) << 30;
        p.cacheBytes = qint64(2) << 30;
        p.availableBytes = qint64(8) << 30;
        p.maxTokensFit = 500000;
        p.contextLength = 4096;
        p.trainedContext = 8192;
        p.wholeDocument = false;
        p.fractionInContext = 0.024;
        p.passagesTotal = 812;
        MemoryPanel panel;
        panel.setPlan(p);
        const QString t = panel.planText();
        QVERIFY2(t.contains(QStringLiteral("This document needs 3.00 GiB")), qPrintable(t));
        QVERIFY(t.contains(QLocale().toString(171234)));
        QVERIFY(t.contains(QLocale().toString(500000)) &&
                t.contains(QStringLiteral("tokens</b> fit in the memory")));
        QVERIFY(t.contains(QStringLiteral("2.4%")) && t.contains(QStringLiteral("812 passages")));
        QVERIFY(t.contains(QStringLiteral("trained on contexts of up to")));
        p.wholeDocument = true;
        p.documentTokens = 3000;
        panel.setPlan(p);
        QVERIFY(panel.planText().contains(QStringLiteral("whole document is read once")));
    }

    void memoryTimelineAndLayers() {
        MemoryPanel panel;
        panel.resize(900, 700);
        for (qint64 t : {0, 256, 512, 768, 1024})
            panel.addSample(sample(t));
        QCOMPARE(panel.sampleCount(), 5);
        const QVector<QPointF> kv = panel.points(MemoryPanel::Series::Kv);
        QCOMPARE(kv.size(), 5);
        QCOMPARE(kv.last(), QPointF(1024, 1024 * 1024));
        QCOMPARE(panel.points(MemoryPanel::Series::FullAttention).last().y(), 1024.0 * 2048);
        QCOMPARE(panel.points(MemoryPanel::Series::FixedState).last().y(), 64.0 * 1024);
        QCOMPARE(panel.layerValues(MemoryPanel::Series::Kv).size(), 4);
        QCOMPARE(panel.layerValues(MemoryPanel::Series::FixedState).at(1), 32.0 * 1024);
        const QString sum = panel.summaryText();
        QVERIFY2(sum.contains(QStringLiteral("1.00 MiB")) && sum.contains(QStringLiteral("2.00 MiB")) &&
                     sum.contains(QStringLiteral("47% saved")),
                 qPrintable(sum));
        // The replaced groups' memory, split into recurrent states and window rows.
        QVERIFY2(sum.contains(QStringLiteral("fixed-size state <b>64 KiB</b> (recurrent states 48 KiB, window rows 16 KiB)")),
                 qPrintable(sum));
        // The same token count again replaces the point (decode samples between prefill ones).
        panel.addSample(sample(1024));
        QCOMPARE(panel.sampleCount(), 5);
        // A context that shrinks (a new question's passages) starts the line again.
        panel.addSample(sample(100));
        QCOMPARE(panel.sampleCount(), 1);

        // The painted chart shows the KV line in its colour.
        for (qint64 t = 200; t <= 3000; t += 200)
            panel.addSample(sample(t));
        const QString png = m_dir.filePath(QStringLiteral("memory.png"));
        QVERIFY(panel.exportPng(png, QSize(900, 700)));
        QImage img(png);
        QCOMPARE(img.size(), QSize(900, 700));
        const QColor kvColor = Theme::colors().kv;
        int kvPixels = 0;
        for (int y = 0; y < img.height(); ++y)
            for (int x = 0; x < img.width(); ++x)
                kvPixels += closeColor(img.pixel(x, y), kvColor, 10) ? 1 : 0;
        QVERIFY2(kvPixels > 300, qPrintable(QString::number(kvPixels)));

        panel.clear();
        QCOMPARE(panel.sampleCount(), 0);
        QVERIFY(panel.layerValues(MemoryPanel::Series::Kv).isEmpty());
    }

    void memoryHistoryFromStore() {
        MemoryPanel panel;
        QVector<MemorySample> stored;
        for (qint64 t : {128, 256, 64, 192})
            stored.push_back(sample(t, 0));
        panel.setHistory(stored);
        QCOMPARE(panel.sampleCount(), 2); // the latest growth: 64, 192
        QCOMPARE(panel.points(MemoryPanel::Series::Kv).first().x(), 64.0);
    }

    void heatmapColours() {
        QCOMPARE(HeatmapWidget::colorFor(0.0), QColor(68, 1, 84));
        QCOMPARE(HeatmapWidget::colorFor(1.0), QColor(253, 231, 37));
        QCOMPARE(HeatmapWidget::colorFor(-3.0), HeatmapWidget::colorFor(0.0));
        QCOMPARE(HeatmapWidget::colorFor(qQNaN()), HeatmapWidget::colorFor(0.0));
        // Luma grows with the value, so the map reads in grey too.
        auto luma = [](const QColor &c) { return 0.299 * c.red() + 0.587 * c.green() + 0.114 * c.blue(); };
        for (double v = 0.0; v < 0.95; v += 0.05)
            QVERIFY(luma(HeatmapWidget::colorFor(v + 0.05)) > luma(HeatmapWidget::colorFor(v)));
    }

    void headsCsv() {
        HeadsPanel panel;
        panel.setStats(heads());
        const QStringList lines = panel.toCsv().split(QLatin1Char('\n'), Qt::SkipEmptyParts);
        QCOMPARE(lines.size(), 1 + 12);
        QCOMPARE(lines[0],
                 QStringLiteral("layer,head,kv_group,replaced,window,recency,sink,d0,d1,d2-3,d4-7"));
        QCOMPARE(lines[1],
                 QStringLiteral("0,0,0,0,32,0.000000,0.000000,0.000000,0.000000,0.500000,0.500000"));
        QCOMPARE(lines[12],
                 QStringLiteral("2,3,1,1,32,1.000000,0.110000,0.500000,0.500000,0.000000,0.000000"));
        QCOMPARE(lines[11].section(QLatin1Char(','), 3, 3),
                 QStringLiteral("1")); // layer 2 head 2: group 1, replaced
        QCOMPARE(lines[10].section(QLatin1Char(','), 3, 3), QStringLiteral("0"));
        const QString path = m_dir.filePath(QStringLiteral("heads.csv"));
        QVERIFY(panel.exportCsv(path));
        QFile f(path);
        QVERIFY(f.open(QIODevice::ReadOnly));
        QCOMPARE(QString::fromUtf8(f.readAll()), panel.toCsv());
    }

    void headsPngAndClick() {
        HeadsPanel panel;
        panel.resize(800, 800);
        panel.show();
        QVERIFY(QTest::qWaitForWindowExposed(&panel));
        const HeadStats s = heads();
        panel.setStats(s);
        // Starts on the most recent-looking head; a click selects another one.
        QCOMPARE(panel.heatmap()->selectedLayer(), 2);
        QCOMPARE(panel.heatmap()->selectedHead(), 3);
        HeatmapWidget *map = panel.heatmap();
        const QRect cell = map->cellRect(1, 2, map->size());
        QVERIFY(!cell.isNull());
        QTest::mouseClick(map, Qt::LeftButton, {}, cell.center());
        QCOMPARE(map->selectedLayer(), 1);
        QCOMPARE(map->selectedHead(), 2);
        QVERIFY2(panel.detailText().contains(QStringLiteral("Layer 1, head 2")) &&
                     panel.detailText().contains(QStringLiteral("0.060")),
                 qPrintable(panel.detailText()));
        const QVector<double> hist = panel.shownHistogram();
        QCOMPARE(hist.size(), 4);
        QCOMPARE(hist[0], s.histAt(1, 2, 0));
        QCOMPARE(hist[3], s.histAt(1, 2, 3));

        // The exported map: every plain cell in its value's colour, replaced cells hatched.
        const QString png = m_dir.filePath(QStringLiteral("heads.png"));
        QVERIFY(panel.exportPng(png));
        const QImage img(png);
        QVERIFY(!img.isNull());
        for (int l = 0; l < 3; ++l)
            for (int h = 0; h < 4; ++h) {
                if (s.isReplaced(l, h) || (l == 1 && h == 2)) continue; // hatched / selection outline
                const QRect c = map->cellRect(l, h, img.size());
                QVERIFY2(closeColor(img.pixel(c.center()), HeatmapWidget::colorFor(s.recencyAt(l, h))),
                         qPrintable(QStringLiteral("cell %1,%2").arg(l).arg(h)));
            }
        const QRect rep = map->cellRect(2, 2, img.size());
        int off = 0, total = 0;
        for (int y = rep.top() + 3; y < rep.bottom() - 3; ++y)
            for (int x = rep.left() + 3; x < rep.right() - 3; ++x, ++total)
                off += closeColor(img.pixel(x, y), HeatmapWidget::colorFor(s.recencyAt(2, 2))) ? 0 : 1;
        QVERIFY2(off > total / 20, "a replaced group is not marked");

        panel.clear();
        QVERIFY(panel.stats().isEmpty());
        QVERIFY(!panel.exportPng(png + QStringLiteral(".2")));
    }
};

QTEST_MAIN(TestPanels)
#include "test_panels.moc"
