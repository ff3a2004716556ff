// Passage splitting and BM25 selection (SQLite FTS5), in memory and in the session store.
#include "app_test_util.h"

#include "core/document_import.h"
#include "core/passage_index.h"
#include "core/session_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>

using namespace recur_app;

namespace {

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    return s;
}
bool contains_word(const std::string &text, const std::string &word) { return lower(text).find(word) != std::string::npos; }

// Invariants every split must satisfy, checked against the text itself.
void check_split(const std::string &text, const std::vector<passage> &ps, int32_t max_tokens, const token_counter &count) {
    size_t prev_end = 0;
    for (size_t i = 0; i < ps.size(); ++i) {
        const passage &p = ps[i];
        EXPECT_EQ(p.ordinal, int32_t(i));
        ASSERT_LE(p.begin, p.end);
        ASSERT_LE(p.end, text.size());
        EXPECT_GE(p.begin, prev_end) << "passages overlap at " << i;
        EXPECT_EQ(p.text, text.substr(p.begin, p.end - p.begin));
        EXPECT_FALSE(p.text.empty());
        EXPECT_FALSE(std::isspace(static_cast<unsigned char>(p.text.front())));
        EXPECT_FALSE(std::isspace(static_cast<unsigned char>(p.text.back())));
        EXPECT_EQ(find_invalid_utf8(p.text), std::string_view::npos) << "passage " << i << " splits a character";
        EXPECT_LE(count(p.text), max_tokens) << "passage " << i;
        // Whatever lies between passages is whitespace only: nothing is lost.
        for (size_t k = prev_end; k < p.begin; ++k) ASSERT_TRUE(std::isspace(static_cast<unsigned char>(text[k])));
        prev_end = p.end;
    }
    for (size_t k = prev_end; k < text.size(); ++k) ASSERT_TRUE(std::isspace(static_cast<unsigned char>(text[k])));
}

const std::string &pride() {
    static const std::string text = import_document(app_test::shared_path("data/prideprejudice.txt")).text;
    return text;
}

} // namespace

TEST(PassageSplit, ParagraphsArePackedNotCut) {
    std::string text;
    std::vector<size_t> para_starts;
    for (int i = 0; i < 40; ++i) {
        para_starts.push_back(text.size());
        text += "Paragraph " + std::to_string(i) + " says something about topic " + std::to_string(i % 7) + ".\n";
        text += "It continues on a second line.\n\n";
    }
    split_params p;
    p.target_tokens = 60;
    p.max_tokens = 100;
    const auto ps = split_passages(text, p);
    check_split(text, ps, 100, estimate_tokens);
    ASSERT_GT(ps.size(), 3u);
    for (const passage &x : ps) // every passage starts where a paragraph starts
        EXPECT_NE(std::find(para_starts.begin(), para_starts.end(), x.begin), para_starts.end());
}

TEST(PassageSplit, LongParagraphIsCutAtSentences) {
    std::string text;
    for (int i = 0; i < 200; ++i) text += "Sentence number " + std::to_string(i) + " is here. ";
    split_params p;
    p.target_tokens = 50;
    p.max_tokens = 80;
    const auto ps = split_passages(text, p);
    check_split(text, ps, 80, estimate_tokens);
    ASSERT_GT(ps.size(), 5u);
    for (size_t i = 0; i + 1 < ps.size(); ++i) EXPECT_EQ(ps[i].text.back(), '.') << "passage " << i;
}

TEST(PassageSplit, TextWithoutSpacesIsCutOnCharacterBoundaries) {
    std::string text;
    for (int i = 0; i < 3000; ++i) text += "\xC3\xA9"; // é, two bytes, no spaces anywhere
    split_params p;
    p.target_tokens = 100;
    p.max_tokens = 150;
    const auto ps = split_passages(text, p);
    check_split(text, ps, 150, estimate_tokens);
    EXPECT_GT(ps.size(), 5u);
}

TEST(PassageSplit, CustomCounterIsHonoured) {
    // A counter that says every byte is a token: passages must stay within max_tokens bytes.
    const token_counter bytes = [](std::string_view t) { return int32_t(t.size()); };
    split_params p;
    p.target_tokens = 300;
    p.max_tokens = 500;
    p.count = bytes;
    const std::string text = pride().substr(0, 60000);
    const auto ps = split_passages(text, p);
    check_split(text, ps, 500, bytes);
}

TEST(PassageSplit, PrideAndPrejudiceWhole) {
    const auto ps = split_passages(pride());
    check_split(pride(), ps, split_params{}.max_tokens, estimate_tokens);
    EXPECT_GT(ps.size(), 300u);
}

TEST(FtsQuery, KeepsContentWordsOnly) {
    const std::string q = fts_query_for("What did Mr. Darcy\xE2\x80\x99s letter say about Wickham?");
    EXPECT_NE(q.find("\"darcy\""), std::string::npos) << q;
    EXPECT_NE(q.find("\"letter\""), std::string::npos) << q;
    EXPECT_NE(q.find("\"wickham\""), std::string::npos) << q;
    EXPECT_NE(q.find("\"mr\""), std::string::npos) << q;
    EXPECT_EQ(q.find("\"what\""), std::string::npos) << q;
    EXPECT_EQ(q.find("\"about\""), std::string::npos) << q;
    EXPECT_EQ(q.find("\"s\""), std::string::npos) << q;
    EXPECT_EQ(fts_query_for("what is the?"), "");
    // Quotes and FTS5 operators in the question cannot break the query.
    EXPECT_EQ(fts_query_for("\"NEAR\" (letter) OR*"), "\"near\" OR \"letter\"");
}

TEST(PassageIndex, SelectsDarcysLetter) {
    const passage_index index(pride());
    ASSERT_GT(index.size(), 300);
    const int32_t budget = 1500;
    const selection sel = index.select("What did Mr. Darcy's letter say?", budget);
    EXPECT_TRUE(sel.matched);
    ASSERT_FALSE(sel.passages.empty());
    EXPECT_LE(sel.n_tokens, budget);
    int32_t sum = 0;
    bool both = false;
    for (size_t i = 0; i < sel.passages.size(); ++i) {
        const passage &p = sel.passages[i];
        if (i) {
            EXPECT_LT(sel.passages[i - 1].ordinal, p.ordinal) << "not in document order";
        }
        EXPECT_EQ(p.text, pride().substr(p.begin, p.end - p.begin));
        EXPECT_EQ(p.n_tokens, estimate_tokens(p.text));
        sum += p.n_tokens;
        EXPECT_TRUE(contains_word(p.text, "darcy") || contains_word(p.text, "letter")) << p.text.substr(0, 200);
        both = both || (contains_word(p.text, "darcy") && contains_word(p.text, "letter"));
    }
    EXPECT_EQ(sum, sel.n_tokens);
    EXPECT_TRUE(both) << "no selected passage mentions both Darcy and a letter";
    // The best-scoring passage mentions both.
    const passage best = *std::max_element(sel.passages.begin(), sel.passages.end(),
                                           [](const passage &a, const passage &b) { return a.score < b.score; });
    EXPECT_TRUE(contains_word(best.text, "darcy") && contains_word(best.text, "letter")) << best.text;
}

TEST(PassageIndex, StemmingFindsOtherForms) {
    const passage_index index("The letters arrived on Monday.\n\nNothing else happened.\n\nHe was writing again.");
    const selection sel = index.select("letter written", 1000);
    ASSERT_TRUE(sel.matched);
    ASSERT_EQ(sel.passages.size(), 1u); // the three paragraphs are packed into one passage
    const selection none = index.select("zebra", 1000);
    EXPECT_FALSE(none.matched);
}

TEST(PassageIndex, BudgetIsExactWithTheGivenCounterAndOverhead) {
    const passage_index index(pride().substr(0, 200000));
    const token_counter bytes = [](std::string_view t) { return int32_t(t.size()); };
    for (int32_t budget : {100, 2000, 9000}) {
        const selection sel = index.select("Elizabeth Bennet ball dance", budget, bytes, 7);
        int32_t total = 0;
        for (const passage &p : sel.passages) {
            EXPECT_EQ(p.n_tokens, int32_t(p.text.size()));
            total += p.n_tokens + 7;
        }
        EXPECT_LE(total, budget);
        if (budget >= 9000) {
            EXPECT_GT(total, budget / 2) << "the budget should be mostly used";
        }
    }
}

TEST(PassageIndex, NoMatchFallsBackToTheBeginning) {
    const passage_index index(pride().substr(0, 50000));
    const selection sel = index.select("xylophone quasar", 400);
    EXPECT_FALSE(sel.matched);
    ASSERT_FALSE(sel.passages.empty());
    EXPECT_EQ(sel.passages.front().ordinal, 0);
    for (size_t i = 0; i < sel.passages.size(); ++i) EXPECT_EQ(sel.passages[i].ordinal, int32_t(i));
}

TEST(PassageIndex, StoredIndexIsBuiltOnceAndPerDocument) {
    app_test::temp_dir dir;
    session_store store(dir.file("s.db"));
    document a = import_bytes(pride().substr(0, 100000), "pp.txt");
    document b = import_bytes("Letters from Darcy are not in this one.\n\nOnly cats and dogs live here.", "other.txt");
    const int64_t ida = store.add_document(a), idb = store.add_document(b);
    std::vector<passage> first;
    {
        const passage_index ia(store, ida);
        first = ia.all();
        ASSERT_GT(first.size(), 10u);
    }
    const passage_index ia(store, ida), ib(store, idb);
    const std::vector<passage> again = ia.all();
    ASSERT_EQ(again.size(), first.size());
    for (size_t i = 0; i < again.size(); ++i) EXPECT_EQ(again[i].id, first[i].id) << "index was rebuilt";
    const selection sel = ib.select("Darcy letters", 1000);
    ASSERT_EQ(sel.passages.size(), 1u);
    EXPECT_NE(sel.passages[0].text.find("cats"), std::string::npos); // document b's only passage
    const selection sela = ia.select("Darcy letters", 1000);
    for (const passage &p : sela.passages) EXPECT_EQ(p.text, a.text.substr(p.begin, p.end - p.begin));
}
