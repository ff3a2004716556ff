#include "qt_tsan.h"

#ifdef RECUR_QT_TSAN

#include <QObject>
#include <QtGlobal>

// Mirrored from Qt 6's private QtCore/private/qobject_p.h ("for Qt Test"); the layout has been
// the same since Qt 4.
struct QSignalSpyCallbackSet {
    typedef void (*BeginCallback)(QObject *caller, int signal_or_method_index, void **argv);
    typedef void (*EndCallback)(QObject *caller, int signal_or_method_index);
    BeginCallback signal_begin_callback, slot_begin_callback;
    EndCallback signal_end_callback, slot_end_callback;
};
void Q_CORE_EXPORT qt_register_signal_spy_callbacks(QSignalSpyCallbackSet *callback_set);

namespace qt_tsan {

std::recursive_mutex &queueLock() {
    static std::recursive_mutex lock;
    return lock;
}

namespace {

void signalBegin(QObject *, int, void **) { queueLock().lock(); }
void signalEnd(QObject *, int) { queueLock().unlock(); }

// QInternal::EventNotifyCallback runs in QCoreApplication::notifyInternal2 before every event is
// delivered, in every thread. Returning false lets the delivery go on.
bool beforeDelivery(void **) {
    handoff();
    return false;
}

} // namespace

void install() {
    static const bool installed = [] {
        static QSignalSpyCallbackSet hooks = {signalBegin, nullptr, signalEnd, nullptr};
        qt_register_signal_spy_callbacks(&hooks);
        QInternal::registerCallback(QInternal::EventNotifyCallback, beforeDelivery);
        return true;
    }();
    Q_UNUSED(installed);
}

void handoff() {
    std::lock_guard<std::recursive_mutex> hold(queueLock());
}

} // namespace qt_tsan

#else

namespace qt_tsan {
void install() {}
void handoff() {}
} // namespace qt_tsan

#endif
