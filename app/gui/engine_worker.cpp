#include "engine_worker.h"
#include "qt_tsan.h"

#include "core/ask.h"
#include "core/document_import.h"
#include "core/inference_session.h"
#include "core/paths.h"
#include "core/session_store.h"
#include "recur/chat.h"
#include "recur/error.h"
#include "recur/model.h"

#include <QFile>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <optional>

QString formatBytes(qint64 bytes) {
    const double b = double(bytes);
    if (bytes < 1024) return QStringLiteral("%1 B").arg(bytes);
    if (b < 1024.0 * 1024) return QStringLiteral("%1 KiB").arg(b / 1024, 0, 'f', 0);
    if (b < 1024.0 * 1024 * 1024)
        return QStringLiteral("%1 MiB").arg(b / (1024.0 * 1024), 0, 'f', b < 10 * 1048576.0 ? 2 : 1);
    return QStringLiteral("%1 GiB").arg(b / (1024.0 * 1024 * 1024), 0, 'f', 2);
}

DeviceSupport deviceSupport() {
    const recur_app::gpu_status &g = recur_app::query_gpu();
    DeviceSupport d;
    d.cudaBuilt = g.built;
    d.cudaAvailable = g.available;
    d.gpuName = QString::fromStdString(g.name);
    d.reason = QString::fromStdString(g.reason);
    return d;
}

namespace {

QString qs(const std::string &s) {
    return QString::fromStdString(s);
}

MemorySample toSample(const recur::memory_report &r) {
    MemorySample s;
    s.tokens = r.n_past;
    s.contextLength = r.n_ctx;
    s.weightsBytes = qint64(r.weights_bytes);
    s.kvAllocatedBytes = qint64(r.kv_bytes);
    s.kvUsedBytes = qint64(r.kv_used_bytes);
    s.fixedStateBytes = qint64(r.recurrent_bytes + r.window_bytes);
    s.windowBytes = qint64(r.window_bytes);
    s.scratchBytes = qint64(r.scratch_bytes);
    // What full attention would hold for the tokens so far (the report gives it at n_ctx).
    const double filled = r.n_ctx > 0 ? double(r.n_past) / double(r.n_ctx) : 0.0;
    s.fullAttentionUsedBytes = qint64(std::llround(double(r.full_attention_kv_bytes) * filled));
    s.layers.reserve(qsizetype(r.layers.size()));
    for (const recur::layer_memory &lm : r.layers) {
        LayerMemory l;
        l.attentionGroups = lm.attention_groups;
        l.replacedGroups = lm.replaced_groups;
        l.kvUsedBytes = qint64(lm.kv_used_bytes);
        l.fixedStateBytes = qint64(lm.recurrent_bytes + lm.window_bytes);
        l.windowBytes = qint64(lm.window_bytes);
        l.fullAttentionUsedBytes = qint64(std::llround(double(lm.full_attention_kv_bytes) * filled));
        s.layers.push_back(l);
    }
    return s;
}

HeadStats toHeadStats(const std::vector<recur_app::head_stat> &stats, int window, const recur::model &m) {
    const recur::model_hparams &hp = m.hparams();
    HeadStats h;
    h.nLayer = hp.n_layer;
    h.nHead = hp.n_head;
    h.nHeadKv = hp.n_head_kv;
    h.window = window;
    for (const recur_app::head_stat &s : stats)
        h.nBins = std::max(h.nBins, int(s.hist.size()));
    h.recency.fill(0.0, h.nLayer * h.nHead);
    h.sink.fill(0.0, h.nLayer * h.nHead);
    h.hist.fill(0.0, h.nLayer * h.nHead * h.nBins);
    for (const recur_app::head_stat &s : stats) {
        if (s.layer < 0 || s.layer >= h.nLayer || s.head < 0 || s.head >= h.nHead) continue;
        const int i = s.layer * h.nHead + s.head;
        h.recency[i] = s.recency;
        h.sink[i] = s.sink;
        for (size_t b = 0; b < s.hist.size(); ++b)
            h.hist[i * h.nBins + int(b)] = s.hist[b];
    }
    h.replaced.fill(0, h.nLayer * h.nHeadKv);
    const auto &hy = m.hybrid();
    for (int l = 0; l < h.nLayer && size_t(l) < hy.size(); ++l)
        for (int g = 0; g < h.nHeadKv && size_t(g) < hy[size_t(l)].group_replaced.size(); ++g)
            h.replaced[l * h.nHeadKv + g] = hy[size_t(l)].group_replaced[size_t(g)];
    return h;
}

QVector<PassageRef> toPassages(const std::vector<recur_app::passage> &ps) {
    QVector<PassageRef> out;
    for (const recur_app::passage &p : ps)
        out.push_back({p.ordinal, qint64(p.begin), qint64(p.end)});
    return out;
}

} // namespace

// ---- the engine side ---------------------------------------------------------------------------

struct EngineWorker::Engine {
    EngineConfig config;
    SamplingConfig sampling;
    std::unique_ptr<recur::model> model;
    std::unique_ptr<recur_app::ask_engine> asker; // the context; refers to *model
    std::unique_ptr<recur_app::session_store> store;

    recur_app::session_store &requireStore() {
        if (!store) throw recur::error("no session database is open");
        return *store;
    }
    recur_app::ask_engine &requireModel() {
        if (!asker) throw recur::error("no model is loaded");
        return *asker;
    }

    // The planner's answer for a document before reading it: the app core's plan (does it fit
    // this context, or which share of it does) and the memory the whole of it would need.
    MemoryPlan plan(const std::string &text) const {
        const recur_app::ask_plan p = asker->plan(text);
        MemoryPlan m;
        m.device = QString::fromLatin1(recur_app::device_kind_name(asker->session().kind()));
        m.documentTokens = p.document_tokens;
        m.contextLength = p.n_ctx;
        m.trainedContext = model->hparams().n_ctx_train;
        m.wholeDocument = p.whole_document;
        m.fractionInContext = p.fraction_in_context;
        m.passagesTotal = p.passages_total;
        m.passageBudget = p.passage_budget;

        recur::context_params cp;
        cp.n_ctx = std::max<int32_t>(1, p.document_tokens);
        cp.n_batch = std::max(1, config.batch);
        const recur::memory_report need = recur::context::plan(*model, cp);
        m.cacheBytes = qint64(need.kv_bytes + need.recurrent_bytes + need.window_bytes);
        m.neededBytes = qint64(need.weights_bytes) + m.cacheBytes + qint64(need.scratch_bytes);
        const recur::memory_report now = asker->memory();
        if (asker->session().kind() == recur_app::device_kind::cuda) {
            // The GPU's memory for a context, as on the CPU where the weights are already
            // resident: what was free before this model was uploaded (the planner's answer when
            // the session was made), less the weights and the reserve CUDA and cuBLAS keep.
            const recur_app::gpu_memory_plan g = asker->session().gpu_memory();
            const size_t taken = g.weights_bytes + g.reserve_bytes;
            m.availableBytes = qint64(g.free_bytes > taken ? g.free_bytes - taken : 0);
        } else {
            // The context held now would be given back before a bigger one is made.
            m.availableBytes = qint64(recur_app::available_memory_bytes()) +
                               qint64(now.kv_bytes + now.recurrent_bytes + now.window_bytes);
        }
        const double perToken = double(need.kv_bytes) / double(cp.n_ctx);
        const double room =
            double(m.availableBytes) - double(need.recurrent_bytes + need.window_bytes + need.scratch_bytes);
        if (m.availableBytes <= 0)
            m.maxTokensFit = 0; // unknown
        else if (perToken <= 0)
            m.maxTokensFit = std::numeric_limits<int32_t>::max(); // no cache grows
        else
            m.maxTokensFit = qint64(std::max(0.0, room / perToken));
        return m;
    }

    DocumentInfo documentInfo(qint64 sessionId, qint64 documentId, const recur_app::document_record &rec,
                              std::string text) const {
        DocumentInfo d;
        d.sessionId = sessionId;
        d.documentId = documentId;
        d.title = qs(rec.title);
        d.path = qs(rec.path);
        d.format = qs(rec.format);
        d.bytes = rec.n_bytes;
        d.text = QString::fromStdString(text);
        return d;
    }
};

// ---- requests ----------------------------------------------------------------------------------

EngineWorker::EngineWorker(QObject *parent) : QObject(parent), m_engine(std::make_unique<Engine>()) {
    registerMetaTypes();
}

EngineWorker::~EngineWorker() {
    // Runs on the worker's thread after its last event; EngineHost::shutdown acquires this once
    // QThread::wait returns (a no-op outside TSan builds, see qt_tsan.h).
    m_engine.reset();
    qt_tsan::handoff();
}

void EngineWorker::cancel() {
    m_cancel.store(true, std::memory_order_relaxed);
}

void EngineWorker::cancelAll() {
    m_closing.store(true, std::memory_order_relaxed);
    m_cancel.store(true, std::memory_order_relaxed);
}

void EngineWorker::registerMetaTypes() {
    static const bool done = [] {
        qRegisterMetaType<EngineConfig>();
        qRegisterMetaType<SamplingConfig>();
        qRegisterMetaType<DocumentInfo>();
        qRegisterMetaType<SessionInfo>();
        qRegisterMetaType<MessageRecord>();
        qRegisterMetaType<ModelInfo>();
        qRegisterMetaType<MemorySample>();
        qRegisterMetaType<MemoryPlan>();
        qRegisterMetaType<HeadStats>();
        qRegisterMetaType<ConvertRequest>();
        qRegisterMetaType<ConvertProgress>();
        qRegisterMetaType<ConvertSummary>();
        qRegisterMetaType<AnswerStats>();
        return true;
    }();
    Q_UNUSED(done);
}

// Emits a signal whose arguments are temporary QStrings. The GUI thread drops the last
// reference to their text inside libQt6Core, which TSan cannot see, so a TSan build holds the
// queue lock until the temporaries are gone (qt_tsan.h); elsewhere this is a plain call.
template <typename Emit> static void toGui(Emit &&emitIt) {
    qt_tsan::PostScope posting;
    emitIt();
}

// Runs one request between busyChanged(true) and busyChanged(false), turning the engine's and
// the store's exceptions into errorOccurred at this boundary (STYLE item 2).
template <typename F> void EngineWorker::run(const QString &what, F &&body) {
    if (m_closing.load(std::memory_order_relaxed)) return;
    m_cancel.store(false, std::memory_order_relaxed);
    emit busyChanged(true, what);
    try {
        body();
    } catch (const std::exception &e) {
        toGui([&] { emit errorOccurred(QString::fromStdString(e.what())); });
    }
    emit busyChanged(false, what);
}

void EngineWorker::openStore(const QString &databasePath) {
    run(QStringLiteral("store"), [&] {
        m_engine->store.reset();
        m_engine->store =
            std::make_unique<recur_app::session_store>(QFile::encodeName(databasePath).toStdString());
        emit storeOpened(databasePath);
    });
}

void EngineWorker::loadModel(const EngineConfig &config, const SamplingConfig &sampling) {
    run(QStringLiteral("load"), [&] {
        Engine &e = *m_engine;
        // A bad setting or an unusable GPU is reported before the model file is read.
        const recur_app::device_request device = recur_app::parse_device(config.device.toStdString());
        recur_app::choose_device(device, recur_app::query_gpu(), "device cuda");
        e.asker.reset(); // refers to the model: goes first
        if (!e.model || e.config.modelPath != config.modelPath) {
            e.model.reset();
            e.model = recur::model::load(QFile::encodeName(config.modelPath).toStdString());
        }
        e.config = config;
        e.sampling = sampling;

        recur_app::ask_params p;
        p.n_ctx = std::max(0, config.contextLength);
        p.n_batch = std::max(1, config.batch);
        p.n_threads = std::max(0, config.threads);
        p.device = device;
        p.recency_window = std::max(0, config.recencyWindow);
        p.max_answer_tokens = std::max(1, sampling.maxTokens);
        p.sampling.temperature = float(sampling.temperature);
        p.sampling.top_k = sampling.topK;
        p.sampling.top_p = float(sampling.topP);
        p.sampling.min_p = float(sampling.minP);
        p.sampling.repeat_penalty = float(sampling.repeatPenalty);
        p.sampling.seed = sampling.seed;
        p.memory_samples_per_prefill = 128; // a smooth chart while reading
        try {
            e.asker = std::make_unique<recur_app::ask_engine>(
                *e.model, QFile::encodeName(config.modelPath).toStdString(), p);
        } catch (const recur::error &err) {
            // The GPU refused the model (the planner's numbers say why): name the setting.
            if (device == recur_app::device_request::cuda) throw recur::error(std::string("device cuda: ") + err.what());
            throw;
        }

        const recur::model_hparams &hp = e.model->hparams();
        const recur::memory_report mem = e.asker->memory();
        ModelInfo info;
        info.path = config.modelPath;
        info.name = qs(e.model->name());
        info.arch = qs(hp.arch);
        info.weightsType = qs(e.model->weights_type());
        info.chatFormat =
            QString::fromLatin1(recur::chat_format_name(recur::detect_chat_format(e.model->chat_template())));
        const recur_app::inference_session &session = e.asker->session();
        info.device = QString::fromLatin1(recur_app::device_kind_name(session.kind()));
        info.deviceName = qs(session.device_name());
        info.deviceNotice = qs(session.notice());
        info.nLayer = hp.n_layer;
        info.nHead = hp.n_head;
        info.nHeadKv = hp.n_head_kv;
        info.headDim = hp.head_dim;
        info.nVocab = hp.n_vocab;
        info.nCtxTrain = hp.n_ctx_train;
        info.contextLength = e.asker->n_ctx();
        info.threads = e.asker->threads();
        info.weightsBytes = qint64(e.model->weights_bytes());
        info.hybrid = e.model->is_hybrid();
        info.replacedGroups = e.model->replaced_group_count();
        info.replaced.fill(0, hp.n_layer * hp.n_head_kv);
        for (int l = 0; l < hp.n_layer && size_t(l) < e.model->hybrid().size(); ++l) {
            const auto &flags = e.model->hybrid()[size_t(l)].group_replaced;
            for (int g = 0; g < hp.n_head_kv && size_t(g) < flags.size(); ++g)
                info.replaced[l * hp.n_head_kv + g] = flags[size_t(g)];
        }
        emit modelLoaded(info);
        emit memoryChanged(toSample(mem));
    });
}

void EngineWorker::openDocument(const QString &path, bool newSession, bool repairUtf8) {
    run(QStringLiteral("open"), [&] {
        Engine &e = *m_engine;
        recur_app::session_store &store = e.requireStore();
        recur_app::ask_engine &asker = e.requireModel();
        recur_app::import_options opt;
        opt.invalid_utf8 = repairUtf8 ? recur_app::utf8_policy::replace : recur_app::utf8_policy::reject;
        recur_app::document doc;
        try {
            doc = recur_app::import_document(QFile::encodeName(path).toStdString(), opt);
        } catch (const recur_app::import_error &err) {
            toGui([&] {
                emit importFailed(path, QString::fromStdString(err.what()),
                                  err.reason() == recur_app::import_error::kind::invalid_utf8);
            });
            return;
        }
        const int64_t sessionId =
            recur_app::session_for_document(store, doc, QFile::encodeName(e.config.modelPath).toStdString(),
                                            asker.model_fingerprint(), newSession);
        const std::optional<recur_app::session_info> s = store.find_session(sessionId);
        const std::optional<recur_app::document_record> rec =
            s ? store.find_document(s->document_id) : std::nullopt;
        if (!rec) throw recur::error("the session store lost the document just added");
        const MemoryPlan plan = e.plan(doc.text);
        DocumentInfo info = e.documentInfo(sessionId, rec->id, *rec, std::move(doc.text));
        for (const std::string &w : doc.warnings)
            info.warnings << qs(w);
        emit documentOpened(info);
        emit memoryPlanned(plan);
    });
}

void EngineWorker::openSession(qint64 sessionId) {
    run(QStringLiteral("open"), [&] {
        Engine &e = *m_engine;
        recur_app::session_store &store = e.requireStore();
        e.requireModel();
        const std::optional<recur_app::session_info> s = store.find_session(sessionId);
        if (!s) throw recur::error("session " + std::to_string(sessionId) + " does not exist");
        const std::optional<recur_app::document_record> rec = store.find_document(s->document_id);
        if (!rec) throw recur::error("the document of session " + std::to_string(sessionId) + " is missing");
        std::string text = store.document_text(s->document_id);
        const MemoryPlan plan = e.plan(text);
        emit documentOpened(e.documentInfo(sessionId, s->document_id, *rec, std::move(text)));
        emit memoryPlanned(plan);
    });
}

void EngineWorker::ask(qint64 sessionId, const QString &question) {
    run(QStringLiteral("ask"), [&] {
        Engine &e = *m_engine;
        recur_app::session_store &store = e.requireStore();
        recur_app::ask_engine &asker = e.requireModel();
        recur_app::ask_request req;
        req.question = question.toStdString();
        req.store = &store;
        req.session_id = sessionId;

        recur_app::ask_callbacks cb;
        cb.cancel = &m_cancel;
        cb.on_progress = [&](int64_t done, int64_t total) { emit progress(done, total); };
        // The per-layer figures come from the engine's full report at the same moment.
        cb.on_memory = [&](const recur_app::memory_sample &) {
            emit memoryChanged(toSample(asker.memory()));
        };
        cb.on_head_stats = [&](const std::vector<recur_app::head_stat> &stats, int32_t window) {
            emit headStatsChanged(toHeadStats(stats, window, *e.model));
        };
        cb.on_token = [&](std::string_view piece) {
            toGui([&] { emit token(QString::fromUtf8(piece.data(), qsizetype(piece.size()))); });
            return true;
        };
        const recur_app::ask_result r = asker.ask(req, cb);

        AnswerStats a;
        a.sessionId = r.session_id;
        a.userMessageId = r.user_message_id;
        a.assistantMessageId = r.assistant_message_id;
        a.answer = qs(r.answer);
        a.promptTokens = r.prompt_tokens;
        a.reusedTokens = r.reused_tokens;
        a.reusedFrom = QString::fromLatin1(recur_app::reuse_source_name(r.reused_from));
        a.prefillTokens = r.prefill_tokens;
        a.generatedTokens = r.decode_tokens;
        a.prefillTokPerSec = r.prefill_tok_s;
        a.decodeTokPerSec = r.decode_tok_s;
        a.seconds = r.prefill_s + r.decode_s;
        a.stopReason = qs(r.stop_reason);
        a.passages = toPassages(r.passages);
        for (const std::string &w : r.warnings)
            a.warnings << qs(w);
        emit memoryChanged(toSample(r.memory));
        emit answerFinished(a);
    });
}

void EngineWorker::resetContext() {
    run(QStringLiteral("reset"), [&] {
        if (!m_engine->asker) return;
        m_engine->asker->reset();
        emit memoryChanged(toSample(m_engine->asker->memory()));
    });
}

// ---- the thread --------------------------------------------------------------------------------

EngineHost::EngineHost() {
    qt_tsan::install();
    EngineWorker::registerMetaTypes();
    m_thread.setObjectName(QStringLiteral("EngineWorker"));
    m_worker = new EngineWorker; // no parent: it moves to the other thread
    m_worker->moveToThread(&m_thread);
    QObject::connect(&m_thread, &QThread::finished, m_worker, &QObject::deleteLater);
    // Wait until the thread runs (its event dispatcher exists, and Qt emits started after making
    // it): then the first request never races the dispatcher's creation, and a TSan build sees
    // that order through the std::mutex (qt_tsan.h). Thread start takes well under a millisecond.
    std::mutex startMutex;
    std::condition_variable startCondition;
    bool started = false;
    const QMetaObject::Connection onStart = QObject::connect(
        &m_thread, &QThread::started, m_worker,
        [&] {
            std::lock_guard<std::mutex> hold(startMutex);
            started = true;
            startCondition.notify_one();
        },
        Qt::DirectConnection);
    m_thread.start();
    std::unique_lock<std::mutex> wait(startMutex);
    startCondition.wait(wait, [&] { return started; });
    QObject::disconnect(onStart); // it refers to this frame's locals
}

EngineHost::~EngineHost() {
    shutdown();
}

bool EngineHost::shutdown(unsigned long timeoutMs) {
    if (!m_thread.isRunning()) return true;
    m_worker->cancelAll();
    {
        // The worker deletes itself once its loop ends; in TSan builds this orders what this
        // thread did, quit()'s wake-up included, before that (qt_tsan.h).
        qt_tsan::PostScope posting;
        m_thread.quit();
    }
    const bool ended = m_thread.wait(QDeadlineTimer(timeoutMs));
    qt_tsan::handoff();
    return ended;
}
