// Settings: QSettings round trips, bad values falling back to defaults, where the model is
// looked for (configured file, $RECUR_MODEL, the default install path), and the preferences and
// first-run dialogs.
#include "app_settings.h"
#include "first_run_dialog.h"
#include "settings_dialog.h"

#include <QDir>
#include <QFile>
#include <QLabel>
#include <QTemporaryDir>
#include <QTest>

class TestSettings : public QObject {
    Q_OBJECT
  private:
    QTemporaryDir m_dir;

    QString touch(const QString &rel) {
        const QString p = m_dir.filePath(rel);
        QDir().mkpath(QFileInfo(p).absolutePath());
        QFile f(p);
        f.open(QIODevice::WriteOnly);
        return p;
    }

  private slots:
    void initTestCase() {
        QVERIFY(m_dir.isValid());
        qputenv("XDG_DATA_HOME", m_dir.filePath(QStringLiteral("data")).toUtf8());
        qunsetenv("RECUR_MODEL");
    }

    void roundTrip() {
        AppSettings s(m_dir.filePath(QStringLiteral("a.ini")));
        EngineConfig c;
        c.modelPath = touch(QStringLiteral("m/model.gguf"));
        c.threads = 3;
        c.contextLength = 2048;
        c.batch = 64;
        c.recencyWindow = 48;
        c.device = QStringLiteral("cuda"); // kept as chosen even where no GPU answers: loading says why
        s.setEngineConfig(c);
        SamplingConfig sp;
        sp.temperature = 0.5;
        sp.topK = 10;
        sp.topP = 0.9;
        sp.minP = 0.1;
        sp.repeatPenalty = 1.2;
        sp.maxTokens = 100;
        sp.seed = 1234;
        s.setSampling(sp);
        s.setTheme(QStringLiteral("dark"));
        for (int i = 0; i < 12; ++i)
            s.addRecentDocument(touch(QStringLiteral("doc%1.txt").arg(i)));
        s.addRecentDocument(m_dir.filePath(QStringLiteral("doc3.txt"))); // moves to the front
        s.sync();

        AppSettings t(m_dir.filePath(QStringLiteral("a.ini")));
        const EngineConfig d = t.engineConfig();
        QCOMPARE(d.modelPath, c.modelPath);
        QCOMPARE(d.threads, 3);
        QCOMPARE(d.contextLength, 2048);
        QCOMPARE(d.batch, 64);
        QCOMPARE(d.recencyWindow, 48);
        QCOMPARE(d.device, QStringLiteral("cuda"));
        const SamplingConfig e = t.sampling();
        QCOMPARE(e.temperature, 0.5);
        QCOMPARE(e.topK, 10);
        QCOMPARE(e.maxTokens, 100);
        QCOMPARE(e.seed, quint64(1234));
        QCOMPARE(t.theme(), QStringLiteral("dark"));
        const QStringList recent = t.recentDocuments();
        QCOMPARE(recent.size(), 10);
        QVERIFY(recent.first().endsWith(QStringLiteral("doc3.txt")));
        QCOMPARE(recent.count(recent.first()), 1);
    }

    void badValuesGiveDefaults() {
        const QString ini = m_dir.filePath(QStringLiteral("bad.ini"));
        {
            QSettings raw(ini, QSettings::IniFormat);
            raw.setValue(QStringLiteral("engine/threads"), QStringLiteral("many"));
            raw.setValue(QStringLiteral("engine/contextLength"), -5);
            raw.setValue(QStringLiteral("engine/device"), QStringLiteral("tpu"));
            raw.setValue(QStringLiteral("sampling/temperature"), 99);
            raw.setValue(QStringLiteral("sampling/topP"), QStringLiteral("nan"));
            raw.setValue(QStringLiteral("ui/theme"), QStringLiteral("purple"));
        }
        AppSettings s(ini);
        const EngineConfig c = s.engineConfig();
        QCOMPARE(c.threads, EngineConfig().threads);
        QCOMPARE(c.contextLength, 0);
        QCOMPARE(c.device, QStringLiteral("auto")); // the default: the GPU where one answers
        QCOMPARE(s.sampling().temperature, SamplingConfig().temperature);
        QCOMPARE(s.sampling().topP, SamplingConfig().topP);
        QCOMPARE(s.theme(), QStringLiteral("system"));
    }

    void modelIsFoundWhereSetupPutsIt() {
        AppSettings s(m_dir.filePath(QStringLiteral("b.ini")));
        const QString def = AppSettings::defaultModelPath();
        QCOMPARE(def,
                 m_dir.filePath(QStringLiteral("data/RecurDesk/models/SmolLM2-135M-Instruct.Q4_1.gguf")));
        QCOMPARE(s.resolveModelPath(), QString()); // nothing anywhere: the first-run dialog
        touch(QStringLiteral("data/RecurDesk/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
        QCOMPARE(s.resolveModelPath(), def);
        const QString env = touch(QStringLiteral("env.gguf"));
        qputenv("RECUR_MODEL", env.toUtf8());
        QCOMPARE(s.resolveModelPath(), env);
        const QString mine = touch(QStringLiteral("mine.gguf"));
        s.setModelPath(mine);
        QCOMPARE(s.resolveModelPath(), mine);
        s.setModelPath(m_dir.filePath(QStringLiteral("deleted.gguf"))); // a configured file that is gone
        QCOMPARE(s.resolveModelPath(), env);
        s.setModelOverride(QStringLiteral("/x/override.gguf"));
        QCOMPARE(s.resolveModelPath(), QStringLiteral("/x/override.gguf"));
        qunsetenv("RECUR_MODEL");
    }

    void preferencesDialogKeepsValues() {
        EngineConfig c;
        c.modelPath = QStringLiteral("/models/a.gguf");
        c.threads = 4;
        c.contextLength = 8192;
        c.batch = 128;
        c.recencyWindow = 64;
        SamplingConfig s;
        s.temperature = 0.3;
        s.topK = 20;
        s.topP = 0.8;
        s.minP = 0.02;
        s.repeatPenalty = 1.05;
        s.maxTokens = 300;
        s.seed = 99;
        SettingsDialog dlg(c, s, QStringLiteral("light"));
        const EngineConfig c2 = dlg.engineConfig();
        QCOMPARE(c2.modelPath, c.modelPath);
        QCOMPARE(c2.threads, 4);
        QCOMPARE(c2.contextLength, 8192);
        QCOMPARE(c2.batch, 128);
        QCOMPARE(c2.recencyWindow, 64);
        QCOMPARE(c2.device, QStringLiteral("auto")); // EngineConfig's default
        // A chosen device is shown as chosen, and given back.
        EngineConfig onCpu = c;
        onCpu.device = QStringLiteral("cpu");
        QCOMPARE(SettingsDialog(onCpu, s, QStringLiteral("light")).engineConfig().device, QStringLiteral("cpu"));
        const SamplingConfig s2 = dlg.sampling();
        QCOMPARE(s2.temperature, 0.3);
        QCOMPARE(s2.topK, 20);
        QCOMPARE(s2.maxTokens, 300);
        QCOMPARE(s2.seed, quint64(99));
        QCOMPARE(dlg.theme(), QStringLiteral("light"));
        SamplingConfig r;
        SettingsDialog random(c, r, QStringLiteral("system"));
        QCOMPARE(random.sampling().seed, r.seed); // "random" stays random
    }

    void firstRunDialogSaysWhatToDo() {
        FirstRunDialog dlg(
            QStringLiteral("/home/u/.local/share/RecurDesk/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
        QString all;
        for (QLabel *l : dlg.findChildren<QLabel *>())
            all += l->text();
        QVERIFY(all.contains(QStringLiteral("No language model found")));
        QVERIFY(all.contains(QStringLiteral("installer/setup.sh")));
        QVERIFY(all.contains(QStringLiteral("SmolLM2-135M-Instruct.Q4_1.gguf")));
        QVERIFY(dlg.modelPath().isEmpty());
    }
};

QTEST_MAIN(TestSettings)
#include "test_settings.moc"
