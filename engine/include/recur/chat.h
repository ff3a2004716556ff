#pragma once
// Chat prompt formats. A GGUF carries its chat template as Jinja source
// (tokenizer.chat_template); rather than run Jinja, the engine recognises the handful of formats
// it supports by their distinctive markers and renders them with hand-written code, byte for
// byte what the models' official templates produce.
//
// BOS/EOS as text: tokenizers usually prepend BOS as a token, so bos_text defaults to "" and
// nothing is emitted at the very start; pass the BOS text (e.g. "<s>", "<|begin_of_text|>",
// "<bos>") only when the prompt will be tokenized without an automatic BOS. bos_text is
// prepended verbatim for every format. Tokens that a format needs *inside* the prompt are always
// text, and the tokenizer must parse them as special tokens:
//   - Llama 2 starts every later [INST] turn with BOS: bos_text if given, otherwise "<s>".
//   - Llama 2 ends assistant turns and Zephyr ends every turn with EOS: eos_text if given,
//     otherwise "</s>" (StableLM-Zephyr style models pass "<|endoftext|>").
// The other formats have their own turn markers and ignore eos_text.
//
// Default system prompts: some templates inject a system message when the conversation has none
// (SmolLM2's adds "You are a helpful AI assistant named SmolLM, trained by Hugging Face").
// apply_chat_template never invents one: it renders exactly the messages given. To reproduce
// the template's output byte for byte, get the text with chat_default_system_prompt() and pass it
// as a leading system message when the conversation has none.
#include "recur/error.h"

#include <optional>
#include <string>
#include <vector>

namespace recur {

enum class chat_format { chatml, llama2, llama3, gemma, zephyr, plain };

struct chat_message {
    std::string role; // "system" | "user" | "assistant"
    std::string content;
};

// Recognises a format from the Jinja template text by its markers, checked in this order:
//   "<|im_start|>"                                   -> chatml
//   "<|start_header_id|>"                            -> llama3
//   "<start_of_turn>"                                -> gemma
//   "[INST]"                                         -> llama2 (Mistral's [INST] templates too:
//                                                       the nearest supported format)
//   "<|user|>" with "</s>", "eos_token" or "<|endoftext|>", and without Phi-3's "<|end|>"
//                                                    -> zephyr
// Anything else, including "", is plain.
chat_format detect_chat_format(const std::string &jinja_template);

// "chatml", "llama2", "llama3", "gemma", "zephyr", "plain".
const char *chat_format_name(chat_format f);
// The inverse of chat_format_name; nullopt for an unknown name.
std::optional<chat_format> chat_format_from_name(const std::string &name);

// The system prompt a ChatML template injects when the first message is not a system message
// (the literal text between "<|im_start|>system\n" and "<|im_end|>" inside the template), or ""
// when the template has none.
std::string chat_default_system_prompt(const std::string &jinja_template);

// Renders msgs in format f, followed by the assistant prefix when add_generation_prompt (Llama 2
// has none: a prompt ending in " [/INST]" already asks for the answer).
//
//   chatml  "<|im_start|>{role}\n{content}<|im_end|>\n" ..., prefix "<|im_start|>assistant\n"
//   llama3  "<|start_header_id|>{role}<|end_header_id|>\n\n{trim(content)}<|eot_id|>" ...,
//           prefix "<|start_header_id|>assistant<|end_header_id|>\n\n"
//   llama2  Meta's format: "[INST] <<SYS>>\n{sys}\n<</SYS>>\n\n{user} [/INST] {assistant} </s>"
//           "<s>[INST] {user} [/INST]" (user and assistant text stripped as Meta's code does)
//   gemma   "<start_of_turn>{user|model}\n{trim(content)}<end_of_turn>\n" ...,
//           prefix "<start_of_turn>model\n". Gemma has no system role: the system text is put
//           before the next user message as "{sys}\n\n{user}" (as Gemma 3's template does).
//   zephyr  "<|{role}|>\n{content}{eos}\n" ..., prefix "<|assistant|>\n"
//   plain   no template: a transcript for base models. System text then "\n\n", then
//           "User: {content}\n" / "Assistant: {content}\n", prefix "Assistant:". The stop string
//           "\nUser:" ends the answer when the model starts the next turn by itself.
//
// Roles: chatml, llama3 and zephyr write any role name verbatim. In llama2 and gemma a system
// message anywhere is merged into the next user turn (several are joined with "\n\n"), or
// becomes a user turn of its own if no user message follows, so it is never dropped. Other
// roles: llama2 and plain render them as user turns, gemma writes them verbatim (only
// "assistant" becomes "model"). Roles are not required to alternate. Content is not escaped:
// marker text inside a message (say "<|im_end|>") stays text here, and whether it turns into a
// special token is decided by how the caller tokenizes.
std::string apply_chat_template(chat_format f, const std::vector<chat_message> &msgs,
                                bool add_generation_prompt, const std::string &bos_text = "",
                                const std::string &eos_text = "");

// Strings that end the assistant's turn in format f, for stopping generation on the detokenized
// text (in addition to the model's end-of-generation tokens). The first entry is the format's
// own turn terminator.
std::vector<std::string> chat_stop_strings(chat_format f);

} // namespace recur
