// Text helpers of synodctl: POSIX shell-word splitting, UTF-8 validation, base64, a JSON writer
// and escaping for human-readable tables. Pure functions, no I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace synod::clients {

/// A value, or an error naming what was wrong with the input (and, for usage errors, a hint such
/// as the usage line of the command).
template <typename T>
struct Parsed {
  std::optional<T> value;
  std::string error;
  std::string hint;

  bool ok() const { return value.has_value(); }
  static Parsed failure(std::string error, std::string hint = {}) {
    Parsed parsed;
    parsed.error = std::move(error);
    parsed.hint = std::move(hint);
    return parsed;
  }
};

/// Reads one word at `pos` by POSIX shell quoting rules: 'single quotes' keep everything literal;
/// "double quotes" keep everything but \" \\ \$ \` (backslash then that character) and
/// backslash-newline (removed); outside quotes a backslash makes the next character literal. The
/// word ends at unquoted whitespace or at an unquoted character in `stopChars`. No expansion of
/// any kind ($VAR, globs, ~) happens. Returns false (and leaves `error` empty) when no word starts
/// at `pos`; false with `error` set on an unterminated quote or a trailing backslash. '' is a word
/// (the empty one).
bool readShellWord(std::string_view text, size_t& pos, std::string_view stopChars,
                   std::string& word, std::string& error);

/// Splits a line into words by the rules of readShellWord. An unquoted '#' at the start of a word
/// begins a comment that runs to the end of the line.
Parsed<std::vector<std::string>> splitShellWords(std::string_view line);

/// Quotes `word` so that splitShellWords reads it back as one word.
std::string shellQuote(std::string_view word);

/// Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF.
bool isValidUtf8(std::string_view bytes);

/// Standard base64 (RFC 4648, with padding).
std::string base64Encode(std::string_view bytes);
/// Inverse of base64Encode; nullopt on anything that is not canonical padded base64.
std::optional<std::string> base64Decode(std::string_view text);

/// For tables and messages: valid UTF-8 stays as it is except that backslash, control characters
/// and DEL are escaped (\\, \n, \t, \r, \xNN); bytes that are not valid UTF-8 become \xNN.
std::string displayText(std::string_view bytes);

/// Number of code points of valid UTF-8 (the column width of displayText output).
size_t displayWidth(std::string_view utf8);

/// Left-aligned columns separated by two spaces; the last column is not padded. Cells are
/// displayText output.
std::string formatTable(const std::vector<std::vector<std::string>>& rows);

/// Writes one JSON value. Strings are escaped per RFC 8259; bytes that are not valid UTF-8 in a
/// string() become U+FFFD — use bytesField for data that may be binary.
class JsonWriter {
 public:
  JsonWriter& beginObject();
  JsonWriter& endObject();
  JsonWriter& beginArray();
  JsonWriter& endArray();
  JsonWriter& key(std::string_view name);
  JsonWriter& string(std::string_view text);
  JsonWriter& number(uint64_t value);
  JsonWriter& signedNumber(int64_t value);
  JsonWriter& boolean(bool value);
  JsonWriter& null();

  JsonWriter& field(std::string_view name, std::string_view text) { return key(name).string(text); }
  JsonWriter& field(std::string_view name, const char* text) { return key(name).string(text); }
  JsonWriter& field(std::string_view name, uint64_t value) { return key(name).number(value); }
  JsonWriter& field(std::string_view name, bool value) { return key(name).boolean(value); }
  /// `"name":"text"` when `bytes` is valid UTF-8, else `"name_b64":"base64"`.
  JsonWriter& bytesField(std::string_view name, std::string_view bytes);

  const std::string& str() const { return out; }

 private:
  void beforeValue();

  std::string out;
  std::vector<bool> needComma;  // one entry per open object or array
  bool afterKey = false;
};

/// The JSON string literal (with quotes) of `text`.
std::string jsonQuote(std::string_view text);

}  // namespace synod::clients
