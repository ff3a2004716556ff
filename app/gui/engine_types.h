#pragma once
// The values that cross the EngineWorker boundary, in Qt types. The ui/ layer sees only these,
// never an engine header, so a widget compiles without the engine and the engine without Qt.
// All are plain copyable values: they travel through queued signals between threads.
#include <QMetaType>
#include <QString>
#include <QStringList>
#include <QVector>

#include <limits>

// What the worker needs to open a model, size its context and answer.
struct EngineConfig {
    QString modelPath;
    // "auto" (the GPU where the build has the CUDA backend and one answers, else the CPU with a
    // notice), "cpu" or "cuda" (the GPU or an error saying why not): app/core/inference_session.h.
    QString device = QStringLiteral("auto");
    int threads = 0;                        // 0: all cores
    int contextLength = 0;                  // tokens the context holds; 0: the model's, at most 4096
    int batch = 256;                        // tokens per prefill step (one progress report each)
    int recencyWindow = 32;                 // k of DESIGN §4; 0 turns the head statistics off
};

// Sampling, as recur::sampling_params, plus the answer length. The defaults are the app core's
// (recur_app::ask_params): a low temperature, answers should follow the document.
struct SamplingConfig {
    double temperature = 0.2;
    int topK = 40;
    double topP = 0.95;
    double minP = 0.05;
    double repeatPenalty = 1.1;
    int maxTokens = 256;
    quint64 seed = 0xFFFFFFFFu; // recur::random_seed: a fresh seed each answer
};

// A document opened in a session (recur_app::document and its store record).
struct DocumentInfo {
    qint64 sessionId = 0;
    qint64 documentId = 0;
    QString title, path, format;
    QString text;
    qint64 bytes = 0;
    QStringList warnings; // e.g. "replaced 3 invalid UTF-8 sequences"
};

// A session as the session list shows it (recur_app::session_info).
struct SessionInfo {
    qint64 id = 0;
    QString name;
    qint64 documentId = 0;
    QString documentTitle;
    QString modelPath;
    qint64 createdAt = 0, updatedAt = 0; // ms since the epoch
    qint64 messageCount = 0;
};

// A passage of the document an answer was given from.
struct PassageRef {
    int ordinal = 0;
    qint64 begin = 0, end = 0; // byte offsets into the document's UTF-8 text
};

// A stored message (recur_app::message_record).
struct MessageRecord {
    qint64 id = 0;
    QString role; // "user" | "assistant" | "system"
    QString content;
    qint64 createdAt = 0;
    int promptTokens = 0, prefillTokens = 0, decodeTokens = 0;
    double prefillTokPerSec = 0, decodeTokPerSec = 0;
    QString stopReason;
    QVector<PassageRef> passages;
};

struct ModelInfo {
    QString path, name, arch, weightsType, chatFormat;
    QString device;       // where the model runs: "cpu" or "cuda" (what "auto" resolved to)
    QString deviceName;   // "cpu", or the GPU's name
    QString deviceNotice; // why "auto" chose the CPU (empty otherwise): one line for the status bar
    int nLayer = 0, nHead = 0, nHeadKv = 0, headDim = 0, nVocab = 0;
    int nCtxTrain = 0;
    int contextLength = 0; // of the context the worker made
    int threads = 0;
    qint64 weightsBytes = 0;
    bool hybrid = false;
    int replacedGroups = 0;
    QVector<quint8> replaced; // [nLayer][nHeadKv] 1 where the KV group no longer is attention
};

struct LayerMemory {
    int attentionGroups = 0, replacedGroups = 0;
    qint64 kvUsedBytes = 0;            // KV rows filled so far (attention groups)
    // Memory of the replaced groups, whatever the document's length: recurrent states and window
    // groups' rows (windowBytes of it).
    qint64 fixedStateBytes = 0;
    qint64 windowBytes = 0;
    qint64 fullAttentionUsedBytes = 0; // KV this layer would hold now with every group attention
};

// The engine's memory_report at one moment, with the "over tokens processed" figures the chart
// plots: bytes in use for the tokens so far, not the allocation for the whole context.
struct MemorySample {
    qint64 tokens = 0; // tokens in the context (n_past)
    qint64 contextLength = 0;
    qint64 weightsBytes = 0;
    qint64 kvAllocatedBytes = 0; // the cache allocated for the whole context
    qint64 kvUsedBytes = 0;
    qint64 fixedStateBytes = 0; // recurrent states and window rows (as LayerMemory)
    qint64 windowBytes = -1;    // of which window rows; -1: not known (samples stored before)
    qint64 fullAttentionUsedBytes = 0;
    qint64 scratchBytes = 0;
    QVector<LayerMemory> layers;
};

// The planner's answer before reading a document (engine context::plan).
struct MemoryPlan {
    QString device;
    qint64 documentTokens = 0;    // the document (as it would be put in the prompt)
    qint64 neededBytes = 0;       // weights + cache + scratch for those tokens
    qint64 cacheBytes = 0;        // of which KV cache and fixed-size state (recurrent, windows)
    qint64 availableBytes = 0;    // memory of this device the app may use
    qint64 maxTokensFit = 0;      // the longest context that fits in availableBytes
    qint64 contextLength = 0;     // the context the worker made (settings, clamped)
    qint64 trainedContext = 0;    // the model's n_ctx_train
    bool wholeDocument = true;    // the document fits the context with room for a question
    double fractionInContext = 1; // share of the document's tokens that fit
    int passagesTotal = 0;        // passages indexed when it does not fit
    int passageBudget = 0;        // tokens of passages per question then
};

// Recency statistics of every query head (DESIGN §4) for the text read so far.
struct HeadStats {
    int nLayer = 0, nHead = 0, nHeadKv = 0, nBins = 0;
    int window = 32;
    qint64 queries = 0;       // query positions averaged over (per layer, the same for all)
    QVector<double> recency;  // [nLayer][nHead] mean mass on the last `window` tokens
    QVector<double> sink;     // [nLayer][nHead] mean mass on the first token
    QVector<double> hist;     // [nLayer][nHead][nBins] mean mass per distance bin
    QVector<quint8> replaced; // [nLayer][nHeadKv] 1 where the group is served by a recurrent head

    bool isEmpty() const { return nLayer == 0 || nHead == 0; }
    int groupSize() const { return nHeadKv > 0 ? nHead / nHeadKv : 1; }
    int groupOf(int head) const { return head / groupSize(); }
    double recencyAt(int layer, int head) const { return recency.value(layer * nHead + head); }
    double sinkAt(int layer, int head) const { return sink.value(layer * nHead + head); }
    double histAt(int layer, int head, int bin) const {
        return hist.value((layer * nHead + head) * nBins + bin);
    }
    bool isReplaced(int layer, int head) const {
        return replaced.value(layer * nHeadKv + groupOf(head)) != 0;
    }
    // "0", "1", "2–3", "4–7", ...: the distances bin b covers.
    static QString binLabel(int bin);
};

inline QString HeadStats::binLabel(int bin) {
    if (bin <= 1) return QString::number(bin);
    const qint64 lo = qint64(1) << (bin - 1), hi = (qint64(1) << bin) - 1;
    return QStringLiteral("%1–%2").arg(lo).arg(hi);
}

// The outcome of one answer, shown under it ("128 tokens · 41.3 tok/s").
struct AnswerStats {
    qint64 sessionId = 0, userMessageId = 0, assistantMessageId = 0;
    QString answer;        // the whole answer as stored (whitespace-trimmed)
    int promptTokens = 0;  // tokens of the prompt
    int reusedTokens = 0;  // of which already in the engine
    QString reusedFrom;    // "none", "context" or "snapshot"
    int prefillTokens = 0; // of which read for this answer
    int generatedTokens = 0;
    double prefillTokPerSec = 0, decodeTokPerSec = 0;
    double seconds = 0;
    QString stopReason;           // "eos", "stop", "length", "context", "cancelled"
    QVector<PassageRef> passages; // empty when the whole document was in the context
    QStringList warnings;
};

// "Make a hybrid" (ConvertWorker): the default conversion of core/conversion.h (kind auto,
// default sinks, fixed-time distillation, then the end-to-end and retrieval checks) of a model.
struct ConvertRequest {
    QString modelPath;       // the original model
    QString calibrationPath; // a .txt/.md/.pdf the recency analysis and distillation read
    double fraction = 0.25;  // of the KV groups to replace
    QString outputPath;      // the hybrid .gguf (written through OUT.part, checkpoints beside it)
    int threads = 0;         // 0: all cores
    int steps = -1;          // distillation steps; -1: the fixed-time default
};

// Where a conversion is: phase "analysis" (recency, tokens), "capture", "train" (steps),
// "evaluate", "compare" (end-to-end KL), "retrieval" (passkey check), "writing".
struct ConvertProgress {
    QString phase;
    // Stage `stage` (from 1) of the `stages` recur::convert_phases lists.
    int stage = 0, stages = 0;
    qint64 done = 0, total = 0;
    double tokensPerSecond = 0;
    double loss = -1;        // train: mean relative error over the heads, else -1
    double etaSeconds = -1;  // of this phase, -1 when unknown
};

struct ConvertSummary {
    QString outputPath;
    int replacedGroups = 0, totalGroups = 0;
    int recurrentGroups = 0, windowGroups = 0, windowRecurrentGroups = 0;
    double kvFractionKept = 1;  // attention KV bytes of the hybrid / of the original
    double seconds = 0;
};

Q_DECLARE_METATYPE(EngineConfig)
Q_DECLARE_METATYPE(SamplingConfig)
Q_DECLARE_METATYPE(DocumentInfo)
Q_DECLARE_METATYPE(SessionInfo)
Q_DECLARE_METATYPE(MessageRecord)
Q_DECLARE_METATYPE(ModelInfo)
Q_DECLARE_METATYPE(MemorySample)
Q_DECLARE_METATYPE(MemoryPlan)
Q_DECLARE_METATYPE(HeadStats)
Q_DECLARE_METATYPE(AnswerStats)
Q_DECLARE_METATYPE(ConvertRequest)
Q_DECLARE_METATYPE(ConvertProgress)
Q_DECLARE_METATYPE(ConvertSummary)

// What the devices offer, for the preferences' device choice: whether this build has the CUDA
// backend and whether a GPU answers (queried once per process; safe from any thread).
struct DeviceSupport {
    bool cudaBuilt = false;
    bool cudaAvailable = false;
    QString gpuName; // when available
    QString reason;  // why not available
};
DeviceSupport deviceSupport();

// Human-readable byte counts: "812 KiB", "41.5 MiB", "1.20 GiB".
QString formatBytes(qint64 bytes);
