#include "first_run_dialog.h"

#include <QDialogButtonBox>
#include <QFileDialog>
#include <QLabel>
#include <QPushButton>
#include <QVBoxLayout>

FirstRunDialog::FirstRunDialog(const QString &defaultModelPath, QWidget *parent) : QDialog(parent) {
    setWindowTitle(tr("Welcome to RecurDesk"));
    auto *title = new QLabel(tr("No language model found"));
    QFont tf = title->font();
    tf.setPointSizeF(tf.pointSizeF() * 1.35);
    tf.setBold(true);
    title->setFont(tf);

    auto *body = new QLabel(
        tr("<p>RecurDesk answers questions about your documents with a language model that runs on this "
           "computer. It needs a model file in GGUF format, and none was found.</p>"
           "<p>The setup script downloads the default model, SmolLM2-135M-Instruct (about 90 MB), "
           "checks it and puts it where RecurDesk looks for it:</p>"
           "<pre>  installer/setup.sh</pre>"
           "<p>Default location:<br><code>%1</code></p>"
           "<p>Or choose any GGUF model of the Llama or Qwen2 families you already have.</p>")
            .arg(defaultModelPath.toHtmlEscaped()));
    body->setWordWrap(true);
    body->setTextFormat(Qt::RichText);
    body->setTextInteractionFlags(Qt::TextSelectableByMouse);
    body->setMinimumWidth(520);

    auto *buttons = new QDialogButtonBox;
    QPushButton *choose = buttons->addButton(tr("Choose Model File…"), QDialogButtonBox::AcceptRole);
    QPushButton *later = buttons->addButton(tr("Continue Without a Model"), QDialogButtonBox::RejectRole);
    later->setToolTip(tr("Browse earlier sessions; answering needs a model (Settings ▸ Preferences)."));
    choose->setDefault(true);
    connect(choose, &QPushButton::clicked, this, [this] {
        const QString f =
            QFileDialog::getOpenFileName(this, tr("Choose a Model"), QString(), tr("GGUF models (*.gguf)"));
        if (f.isEmpty()) return;
        m_path = f;
        accept();
    });
    connect(later, &QPushButton::clicked, this, &QDialog::reject);

    auto *v = new QVBoxLayout(this);
    v->addWidget(title);
    v->addWidget(body);
    v->addWidget(buttons);
}
