// Chat template tests: real templates from the models' tokenizer_config.json (as the Jinja text
// a GGUF stores, i.e. after JSON decoding) and expected prompts written out by hand from the
// formats' definitions.
#include "recur/chat.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace {

using recur::chat_format;
using recur::chat_message;

// HuggingFaceTB/SmolLM2-*-Instruct. JSON "\n" decodes to real newlines.
const std::string smollm2_template = "{% for message in messages %}{% if loop.first and messages[0]['role'] "
                                     "!= 'system' %}{{ '<|im_start|>system\n"
                                     "You are a helpful AI assistant named SmolLM, trained by Hugging "
                                     "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' "
                                     "+ message['role'] + '\n' + message['content'] + '<|im_end|>' + "
                                     "'\n'}}{% endfor %}{% if add_generation_prompt "
                                     "%}{{ '<|im_start|>assistant\n' }}{% endif %}";

// meta-llama/Meta-Llama-3-8B-Instruct.
const std::string llama3_template = "{% set loop_messages = messages %}{% for message in loop_messages %}{% "
                                    "set content = '<|start_header_id|>' + "
                                    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
                                    "'<|eot_id|>' %}{% if loop.index0 == 0 "
                                    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% "
                                    "endfor %}{% if add_generation_prompt %}{{ "
                                    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

// meta-llama/Llama-2-7b-chat-hf. Its JSON has "\\n", so the Jinja text holds backslash-n.
const std::string llama2_template =
    R"({% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %})";

// mistralai/Mistral-7B-Instruct-v0.1.
const std::string mistral_template =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) "
    "%}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% "
    "if "
    "message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are "
    "supported!') }}{% endif %}{% endfor %}";

// google/gemma-7b-it.
const std::string gemma_template =
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') "
    "}}{% "
    "endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% "
    "if "
    "(message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% "
    "endif "
    "%}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% "
    "if "
    "add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

// HuggingFaceH4/zephyr-7b-beta: turns end with the eos_token variable, no literal "</s>".
const std::string zephyr_template =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] "
    "+ "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + "
    "eos_token }}\n{% "
    "elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% "
    "endif "
    "%}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

// microsoft/Phi-3-mini-4k-instruct: <|user|> tags but <|end|> terminators, not a supported format.
const std::string phi3_template =
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] "
    "+ "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% "
    "elif "
    "message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% "
    "endfor "
    "%}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";

const std::string sys = "You are terse.";
const std::string u1 = "Hi";
const std::string a1 = "Hello! How can I help?";
const std::string u2 = "What is 2+2?";

std::vector<chat_message> one_turn() {
    return {{"user", u1}};
}
std::vector<chat_message> one_turn_sys() {
    return {{"system", sys}, {"user", u1}};
}
std::vector<chat_message> three_turns() {
    return {{"user", u1}, {"assistant", a1}, {"user", u2}};
}
std::vector<chat_message> three_turns_sys() {
    return {{"system", sys}, {"user", u1}, {"assistant", a1}, {"user", u2}};
}

TEST(Chat, DetectsRealTemplates) {
    EXPECT_EQ(recur::detect_chat_format(smollm2_template), chat_format::chatml);
    EXPECT_EQ(recur::detect_chat_format(llama3_template), chat_format::llama3);
    EXPECT_EQ(recur::detect_chat_format(llama2_template), chat_format::llama2);
    EXPECT_EQ(recur::detect_chat_format(mistral_template), chat_format::llama2);
    EXPECT_EQ(recur::detect_chat_format(gemma_template), chat_format::gemma);
    EXPECT_EQ(recur::detect_chat_format(zephyr_template), chat_format::zephyr);
}

TEST(Chat, DetectsZephyrByLiteralEos) {
    EXPECT_EQ(recur::detect_chat_format("{{ '<|user|>\\n' + message['content'] + '</s>' }}"),
              chat_format::zephyr);
}

TEST(Chat, UnknownTemplateIsPlain) {
    EXPECT_EQ(recur::detect_chat_format(""), chat_format::plain);
    EXPECT_EQ(recur::detect_chat_format("{% for message in messages %}{{ message['content'] }}{% endfor %}"),
              chat_format::plain);
    EXPECT_EQ(recur::detect_chat_format("### Instruction:\n{{ prompt }}\n### Response:"), chat_format::plain);
    EXPECT_EQ(recur::detect_chat_format(phi3_template), chat_format::plain);
}

TEST(Chat, FormatNamesRoundTrip) {
    for (auto f : {chat_format::chatml, chat_format::llama2, chat_format::llama3, chat_format::gemma,
                   chat_format::zephyr, chat_format::plain}) {
        const auto back = recur::chat_format_from_name(recur::chat_format_name(f));
        ASSERT_TRUE(back.has_value());
        EXPECT_EQ(*back, f);
    }
    EXPECT_STREQ(recur::chat_format_name(chat_format::chatml), "chatml");
    EXPECT_STREQ(recur::chat_format_name(chat_format::llama3), "llama3");
    EXPECT_FALSE(recur::chat_format_from_name("vicuna").has_value());
}

TEST(Chat, DefaultSystemPromptFromTemplate) {
    EXPECT_EQ(recur::chat_default_system_prompt(smollm2_template),
              "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    // The same with the newline kept as a Jinja escape, and a Qwen2.5-style template where the
    // first "<|im_start|>system" splices in the user's system message.
    EXPECT_EQ(
        recur::chat_default_system_prompt(
            R"({% if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You\'re helpful.<|im_end|>\n' }}{%- endif %})"),
        "You are Qwen, created by Alibaba Cloud. You're helpful.");
    EXPECT_EQ(recur::chat_default_system_prompt(llama3_template), "");
    EXPECT_EQ(recur::chat_default_system_prompt(
                  "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"),
              "");
}

TEST(Chat, ChatmlRendering) {
    const auto f = chat_format::chatml;
    EXPECT_EQ(recur::apply_chat_template(f, one_turn(), true),
              "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    EXPECT_EQ(recur::apply_chat_template(f, one_turn(), false), "<|im_start|>user\nHi<|im_end|>\n");
    EXPECT_EQ(recur::apply_chat_template(f, one_turn_sys(), true),
              "<|im_start|>system\nYou are "
              "terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    EXPECT_EQ(recur::apply_chat_template(f, three_turns(), true),
              "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n"
              "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
    EXPECT_EQ(
        recur::apply_chat_template(f, three_turns_sys(), true),
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n");
    // ChatML does not trim.
    EXPECT_EQ(recur::apply_chat_template(f, {{"user", " x \n"}}, false),
              "<|im_start|>user\n x \n<|im_end|>\n");
}

TEST(Chat, SmolLM2MatchesTemplateWithExplicitDefaultSystem) {
    // What SmolLM2's template renders for a lone user "Hi": its baked-in system turn first.
    const std::string expected =
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
    const auto f = recur::detect_chat_format(smollm2_template);
    std::vector<chat_message> msgs = one_turn();
    msgs.insert(msgs.begin(), {"system", recur::chat_default_system_prompt(smollm2_template)});
    EXPECT_EQ(recur::apply_chat_template(f, msgs, true), expected);
    // Without it, nothing is invented.
    EXPECT_EQ(recur::apply_chat_template(f, one_turn(), true),
              "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(Chat, Llama3Rendering) {
    const auto f = chat_format::llama3;
    const std::string bos = "<|begin_of_text|>";
    EXPECT_EQ(recur::apply_chat_template(f, one_turn(), true, bos),
              "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
    EXPECT_EQ(recur::apply_chat_template(f, one_turn_sys(), true, bos),
              "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
    EXPECT_EQ(recur::apply_chat_template(f, three_turns_sys(), true),
              "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\nHello! How can I help?<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
    EXPECT_EQ(recur::apply_chat_template(f, three_turns(), false),
              "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\nHello! How can I help?<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>");
    // The template trims each message.
    EXPECT_EQ(recur::apply_chat_template(f, {{"user", "  Hi \n"}}, false),
              "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
}

TEST(Chat, Llama2Rendering) {
    const auto f = chat_format::llama2;
    EXPECT_EQ(recur::apply_chat_template(f, one_turn(), true, "<s>", "</s>"), "<s>[INST] Hi [/INST]");
    EXPECT_EQ(recur::apply_chat_template(f, one_turn_sys(), true, "<s>", "</s>"),
              "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi [/INST]");
    EXPECT_EQ(recur::apply_chat_template(f, three_turns(), true, "<s>", "</s>"),
              "<s>[INST] Hi [/INST] Hello! How can I help? </s><s>[INST] What is 2+2? [/INST]");
    EXPECT_EQ(recur::apply_chat_template(f, three_turns_sys(), true, "<s>", "</s>"),
              "<s>[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi [/INST] Hello! How can I help? </s>"
              "<s>[INST] What is 2+2? [/INST]");
    // BOS added as a token by the caller: no leading "<s>", but the inner one stays; the default
    // EOS text is "</s>"; no generation prefix exists, so the flag changes nothing.
    EXPECT_EQ(recur::apply_chat_template(f, three_turns_sys(), false),
              "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi [/INST] Hello! How can I help? </s>"
              "<s>[INST] What is 2+2? [/INST]");
    // User and assistant text are stripped, as Meta's code does.
    EXPECT_EQ(recur::apply_chat_template(f, {{"user", " Hi\n"}, {"assistant", " Yo "}}, false, "<s>"),
              "<s>[INST] Hi [/INST] Yo </s>");
    // A system message with no user turn after it still reaches the model.
    EXPECT_EQ(recur::apply_chat_template(f, {{"system", sys}}, true),
              "[INST] <<SYS>>\nYou are terse.\n<</SYS>> [/INST]");
}

TEST(Chat, GemmaRendering) {
    const auto f = chat_format::gemma;
    EXPECT_EQ(recur::apply_chat_template(f, one_turn(), true, "<bos>"),
              "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n");
    EXPECT_EQ(recur::apply_chat_template(f, one_turn_sys(), true),
              "<start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n<start_of_turn>model\n");
    EXPECT_EQ(
        recur::apply_chat_template(f, three_turns(), true),
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello! How can I help?<end_of_turn>\n"
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n");
    EXPECT_EQ(
        recur::apply_chat_template(f, three_turns_sys(), false),
        "<start_of_turn>user\nYou are terse.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello! How can I "
        "help?<end_of_turn>\n<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n");
}

TEST(Chat, ZephyrRendering) {
    const auto f = chat_format::zephyr;
    EXPECT_EQ(recur::apply_chat_template(f, one_turn(), true), "<|user|>\nHi</s>\n<|assistant|>\n");
    EXPECT_EQ(recur::apply_chat_template(f, one_turn_sys(), true),
              "<|system|>\nYou are terse.</s>\n<|user|>\nHi</s>\n<|assistant|>\n");
    EXPECT_EQ(recur::apply_chat_template(f, three_turns_sys(), true),
              "<|system|>\nYou are terse.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello! How can I help?</s>\n"
              "<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n");
    EXPECT_EQ(recur::apply_chat_template(f, three_turns(), false, "", "<|endoftext|>"),
              "<|user|>\nHi<|endoftext|>\n<|assistant|>\nHello! How can I help?<|endoftext|>\n"
              "<|user|>\nWhat is 2+2?<|endoftext|>\n");
}

TEST(Chat, PlainRendering) {
    const auto f = chat_format::plain;
    EXPECT_EQ(recur::apply_chat_template(f, one_turn(), true), "User: Hi\nAssistant:");
    EXPECT_EQ(recur::apply_chat_template(f, one_turn_sys(), true), "You are terse.\n\nUser: Hi\nAssistant:");
    EXPECT_EQ(
        recur::apply_chat_template(f, three_turns_sys(), true),
        "You are terse.\n\nUser: Hi\nAssistant: Hello! How can I help?\nUser: What is 2+2?\nAssistant:");
    EXPECT_EQ(recur::apply_chat_template(f, three_turns(), false, "<s>"),
              "<s>User: Hi\nAssistant: Hello! How can I help?\nUser: What is 2+2?\n");
}

TEST(Chat, StopStrings) {
    auto first = [](chat_format f) { return recur::chat_stop_strings(f).at(0); };
    EXPECT_EQ(first(chat_format::chatml), "<|im_end|>");
    EXPECT_EQ(first(chat_format::llama3), "<|eot_id|>");
    EXPECT_EQ(first(chat_format::llama2), "</s>");
    EXPECT_EQ(first(chat_format::gemma), "<end_of_turn>");
    EXPECT_EQ(first(chat_format::zephyr), "</s>");
    EXPECT_EQ(first(chat_format::plain), "\nUser:");
    // Each format's stop strings include the marker that would open the next user turn, so a
    // model that skips its terminator is still cut off.
    auto has = [](chat_format f, const std::string &s) {
        const auto v = recur::chat_stop_strings(f);
        return std::find(v.begin(), v.end(), s) != v.end();
    };
    EXPECT_TRUE(has(chat_format::chatml, "<|im_start|>"));
    EXPECT_TRUE(has(chat_format::llama3, "<|start_header_id|>"));
    EXPECT_TRUE(has(chat_format::llama2, "[INST]"));
    EXPECT_TRUE(has(chat_format::gemma, "<start_of_turn>"));
    EXPECT_TRUE(has(chat_format::zephyr, "<|user|>"));
}

} // namespace
