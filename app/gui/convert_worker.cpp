#include "convert_worker.h"
#include "engine_worker.h"

#include "core/conversion.h"
#include "core/document_import.h"
#include "recur/convert.h"
#include "recur/distill.h"
#include "recur/error.h"
#include "recur/model.h"
#include "recur/tokenizer.h"

#include <QElapsedTimer>
#include <QFileInfo>

namespace {

// Progress is emitted at most this often (the engine reports every batch or step): the dialog
// repaints once per report, and thousands a second would only queue up.
constexpr qint64 progress_interval_ms = 200;

QString phaseName(const char *phase) {
    const QString p = QString::fromUtf8(phase);
    return p.isEmpty() ? QStringLiteral("distillation") : p;
}

} // namespace

ConvertWorker::ConvertWorker(QObject *parent) : QObject(parent) {
    EngineWorker::registerMetaTypes();
}

void ConvertWorker::cancel() {
    m_cancel.store(true, std::memory_order_relaxed);
}

void ConvertWorker::convert(const ConvertRequest &request) {
    m_cancel.store(false, std::memory_order_relaxed);
    emit started(request);
    QElapsedTimer clock, sinceReport;
    clock.start();
    sinceReport.start();
    try {
        if (request.outputPath.isEmpty()) throw recur::error("choose a file for the hybrid model");
        if (QFileInfo(request.outputPath).absoluteFilePath() == QFileInfo(request.modelPath).absoluteFilePath())
            throw recur::error("the hybrid must go to another file than the original model");
        if (request.fraction <= 0 || request.fraction > 1)
            throw recur::error("the share of KV groups to replace must be above 0% and at most 100%");
        const std::string out = request.outputPath.toStdString();
        auto m = recur::model::load(request.modelPath.toStdString());
        if (m->replaced_group_count() > 0)
            throw recur::error("'" + m->name() + "' is already a hybrid; convert the original model");
        recur::convert_params p = recur_app::default_conversion(*m, request.fraction, out, request.threads);
        if (request.steps >= 0) p.steps = request.steps;
        const recur_app::document doc = recur_app::import_document(request.calibrationPath.toStdString());
        const std::vector<int32_t> ids = recur_app::calibration_tokens(*m, doc.text, m->vocab().adds_bos(), p);

        // Stages are counted on every callback, reported or not, so that a short phase between two
        // reports still counts.
        const int stages = int(recur::convert_phases(p).size());
        QString lastPhase;
        int stage = 0;
        auto report = [&](ConvertProgress pr, bool force) {
            if (pr.phase != lastPhase) lastPhase = pr.phase, ++stage, force = true;
            pr.stage = stage;
            pr.stages = stages;
            if (!force && sinceReport.elapsed() < progress_interval_ms) return;
            sinceReport.restart();
            emit progress(pr);
        };
        const recur::convert_result r = recur::convert_to_hybrid(
            *m, ids, p, out,
            [&](int64_t done, int64_t total) {
                ConvertProgress pr;
                pr.phase = QStringLiteral("analysis");
                pr.done = done, pr.total = total;
                report(pr, done == total);
                return !m_cancel.load(std::memory_order_relaxed);
            },
            [&](const recur::distill_progress &d) {
                ConvertProgress pr;
                pr.phase = phaseName(d.phase);
                pr.done = d.done, pr.total = d.total;
                pr.tokensPerSecond = d.tokens_per_s;
                pr.loss = pr.phase == QLatin1String("train") ? d.rel_loss : -1;
                pr.etaSeconds = d.eta_s;
                report(pr, d.done == d.total);
                return !m_cancel.load(std::memory_order_relaxed);
            });
        ConvertSummary s;
        s.outputPath = request.outputPath;
        s.replacedGroups = r.replaced_groups;
        s.totalGroups = r.total_groups;
        for (const recur::group_choice &g : r.groups) {
            if (!g.replaced) continue;
            if (g.kind == recur::replacement_kind::recurrent) ++s.recurrentGroups;
            else if (g.kind == recur::replacement_kind::window) ++s.windowGroups;
            else ++s.windowRecurrentGroups;
        }
        s.kvFractionKept = r.kv_fraction_kept;
        s.seconds = double(clock.elapsed()) / 1000.0;
        emit finished(s);
    } catch (const recur::cancelled_error &) {
        emit failed(tr("Conversion stopped. Nothing was written; the distillation's checkpoint stays next to the "
                       "output file."),
                    true);
    } catch (const std::exception &e) {
        emit failed(QString::fromUtf8(e.what()), false);
    }
}

ConvertHost::ConvertHost() {
    EngineWorker::registerMetaTypes();
    m_thread.setObjectName(QStringLiteral("ConvertWorker"));
    m_worker = new ConvertWorker; // no parent: it moves to the other thread
    m_worker->moveToThread(&m_thread);
    QObject::connect(&m_thread, &QThread::finished, m_worker, &QObject::deleteLater);
    m_thread.start();
}

ConvertHost::~ConvertHost() {
    m_worker->cancel();
    m_thread.quit();
    m_thread.wait();
}
