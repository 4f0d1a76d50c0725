#include "clients/text.h"

#include <doctest/doctest.h>

#include <random>

using namespace synod::clients;

namespace {

std::vector<std::string> words(std::string_view line) {
  auto parsed = splitShellWords(line);
  REQUIRE_MESSAGE(parsed.ok(), parsed.error);
  return *parsed.value;
}

std::string splitError(std::string_view line) {
  auto parsed = splitShellWords(line);
  REQUIRE_FALSE(parsed.ok());
  return parsed.error;
}

using Words = std::vector<std::string>;

}  // namespace

TEST_CASE("shell words: blanks separate words") {
  CHECK(words("get  a\tb ") == Words{"get", "a", "b"});
  CHECK(words("").empty());
  CHECK(words("   \t ").empty());
}

TEST_CASE("shell words: single quotes keep everything literal") {
  CHECK(words("put 'a b' 'x\\y\"z'") == Words{"put", "a b", "x\\y\"z"});
  CHECK(words("''") == Words{""});
  CHECK(words("a'b c'd") == Words{"ab cd"});
}

TEST_CASE("shell words: double quotes escape only \" \\ $ `") {
  CHECK(words(R"("a \"b\" \\ \$ \` \n")") == Words{"a \"b\" \\ $ ` \\n"});
  CHECK(words(R"("it's")") == Words{"it's"});
  CHECK(words(R"("")") == Words{""});
  CHECK(words("\"a\\\nb\"") == Words{"ab"});
}

TEST_CASE("shell words: backslash outside quotes makes the next character literal") {
  CHECK(words(R"(a\ b c\'d \\)") == Words{"a b", "c'd", "\\"});
  CHECK(words(R"(\#x)") == Words{"#x"});
}

TEST_CASE("shell words: no expansion of any kind") {
  CHECK(words("$HOME * ~ `x`") == Words{"$HOME", "*", "~", "`x`"});
}

TEST_CASE("shell words: # starts a comment only at the start of a word") {
  CHECK(words("# all comment").empty());
  CHECK(words("get a # the rest").size() == 2);
  CHECK(words("get a#b") == Words{"get", "a#b"});
  CHECK(words("get '#a'") == Words{"get", "#a"});
}

TEST_CASE("shell words: unterminated quotes and a trailing backslash are errors") {
  CHECK(splitError("get 'abc").find("unterminated single quote at column 5") != std::string::npos);
  CHECK(splitError("get \"abc").find("unterminated double quote at column 5") != std::string::npos);
  CHECK(splitError("get \"ab\\\"").find("unterminated double quote") != std::string::npos);
  CHECK(splitError("get abc\\").find("trailing backslash") != std::string::npos);
}

TEST_CASE("shell words: readShellWord stops at the given characters") {
  std::string word, error;
  size_t pos = 0;
  std::string_view text = "ke'y)'x) = 1";
  REQUIRE(readShellWord(text, pos, ")", word, error));
  CHECK(word == "key)x");
  CHECK(text.substr(pos) == ") = 1");
  pos = 0;
  CHECK_FALSE(readShellWord(")", pos, ")", word, error));
  CHECK(error.empty());
}

TEST_CASE("shellQuote round-trips through splitShellWords") {
  for (std::string word : {"plain", "", "a b", "it's", "\"q\"", "back\\slash", "#hash", "$x"}) {
    CAPTURE(word);
    CHECK(words(shellQuote(word)) == Words{word});
  }
  CHECK(shellQuote("abc") == "abc");
}

TEST_CASE("UTF-8 validation is strict") {
  CHECK(isValidUtf8(""));
  CHECK(isValidUtf8("plain ascii"));
  CHECK(isValidUtf8("h\xc3\xa9llo"));            // é
  CHECK(isValidUtf8("\xe2\x82\xac"));            // €
  CHECK(isValidUtf8("\xf0\x9f\x98\x80"));        // 😀
  CHECK(isValidUtf8(std::string("a\0b", 3)));    // NUL is a character
  CHECK_FALSE(isValidUtf8("\xff"));              // never valid
  CHECK_FALSE(isValidUtf8("\xc3"));              // truncated
  CHECK_FALSE(isValidUtf8("\xc0\xaf"));          // overlong '/'
  CHECK_FALSE(isValidUtf8("\xe0\x80\xaf"));      // overlong
  CHECK_FALSE(isValidUtf8("\xed\xa0\x80"));      // surrogate U+D800
  CHECK_FALSE(isValidUtf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  CHECK_FALSE(isValidUtf8("\x80"));              // lone continuation
  CHECK_FALSE(isValidUtf8("\xe2\x82"));          // truncated €
}

TEST_CASE("base64 encodes per RFC 4648") {
  CHECK(base64Encode("") == "");
  CHECK(base64Encode("f") == "Zg==");
  CHECK(base64Encode("fo") == "Zm8=");
  CHECK(base64Encode("foo") == "Zm9v");
  CHECK(base64Encode("foob") == "Zm9vYg==");
  CHECK(base64Encode("fooba") == "Zm9vYmE=");
  CHECK(base64Encode("foobar") == "Zm9vYmFy");
  CHECK(base64Encode("\xff\xfe\x00") == "//4=");  // literal stops at NUL: 2 bytes
  CHECK(base64Encode(std::string("\xff\xfe\x00", 3)) == "//4A");
}

TEST_CASE("base64 decodes canonical text and refuses the rest") {
  CHECK(base64Decode("Zm9vYmE=") == std::optional<std::string>("fooba"));
  CHECK(base64Decode("") == std::optional<std::string>(""));
  CHECK_FALSE(base64Decode("Zm9").has_value());
  CHECK_FALSE(base64Decode("Zm9*").has_value());
  CHECK_FALSE(base64Decode("Zh==").has_value());  // non-zero padding bits
  std::mt19937 random(12345);
  for (int round = 0; round < 200; ++round) {
    std::string bytes(random() % 40, '\0');
    for (char& c : bytes)
      c = static_cast<char>(random());
    CHECK(base64Decode(base64Encode(bytes)) == std::optional<std::string>(bytes));
  }
}

TEST_CASE("JSON strings are escaped per RFC 8259") {
  CHECK(jsonQuote("plain") == "\"plain\"");
  CHECK(jsonQuote("a\"b\\c") == R"("a\"b\\c")");
  CHECK(jsonQuote("\n\r\t\b\f") == R"("\n\r\t\b\f")");
  CHECK(jsonQuote(std::string("\x01\x1f\x7f\0", 4)) == R"("\u0001\u001f\u007f\u0000")");
  CHECK(jsonQuote("h\xc3\xa9 \xe2\x82\xac") == "\"h\xc3\xa9 \xe2\x82\xac\"");
  CHECK(jsonQuote("a\xff") == "\"a\xef\xbf\xbd\"");  // invalid byte becomes U+FFFD
  CHECK(jsonQuote("</script>") == "\"</script>\"");
}

TEST_CASE("JsonWriter places commas and colons") {
  JsonWriter json;
  json.beginObject()
      .field("ok", true)
      .field("n", uint64_t{18446744073709551615u})
      .key("list")
      .beginArray()
      .number(1)
      .beginObject()
      .field("s", "x")
      .endObject()
      .null()
      .endArray()
      .key("empty")
      .beginObject()
      .endObject()
      .key("neg")
      .signedNumber(-5)
      .endObject();
  CHECK(json.str() ==
        R"({"ok":true,"n":18446744073709551615,"list":[1,{"s":"x"},null],"empty":{},"neg":-5})");
}

TEST_CASE("JsonWriter::bytesField falls back to base64 for binary") {
  JsonWriter json;
  json.beginObject()
      .bytesField("key", "k\xc3\xa9")
      .bytesField("value", std::string("\x00\xff", 2))
      .endObject();
  CHECK(json.str() == "{\"key\":\"k\xc3\xa9\",\"value_b64\":\"AP8=\"}");
}

TEST_CASE("displayText escapes what a terminal would mangle") {
  CHECK(displayText("plain é") == "plain é");
  CHECK(displayText("a\nb\tc\\") == "a\\nb\\tc\\\\");
  CHECK(displayText(std::string("\x00\x1b\x7f\xff", 4)) == "\\x00\\x1b\\x7f\\xff");
}

TEST_CASE("formatTable aligns columns by code points") {
  std::string table = formatTable({{"KEY", "VALUE"}, {"é", "1"}, {"long-key", "2"}});
  CHECK(table ==
        "KEY       VALUE\n"
        "é         1\n"
        "long-key  2\n");
}
