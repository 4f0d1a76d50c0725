#include "clients/text.h"

#include <algorithm>

namespace synod::clients {

namespace {

bool isBlank(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/// Length of the valid UTF-8 sequence starting at `pos`, or 0 if none starts there.
size_t utf8SequenceLength(std::string_view bytes, size_t pos) {
  auto at = [&](size_t i) { return static_cast<unsigned char>(bytes[i]); };
  unsigned char lead = at(pos);
  if (lead < 0x80) return 1;
  size_t length;
  unsigned char low = 0x80, high = 0xbf;  // allowed range of the second byte
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    if (lead == 0xe0) low = 0xa0;   // overlong
    if (lead == 0xed) high = 0x9f;  // surrogates
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    if (lead == 0xf0) low = 0x90;   // overlong
    if (lead == 0xf4) high = 0x8f;  // above U+10FFFF
  } else {
    return 0;
  }
  if (pos + length > bytes.size()) return 0;
  if (at(pos + 1) < low || at(pos + 1) > high) return 0;
  for (size_t i = 2; i < length; ++i) {
    if (at(pos + i) < 0x80 || at(pos + i) > 0xbf) return 0;
  }
  return length;
}

const char BASE64_ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

void appendHexByte(std::string& out, unsigned char byte) {
  const char* digits = "0123456789abcdef";
  out += "\\x";
  out += digits[byte >> 4];
  out += digits[byte & 0xf];
}

}  // namespace

bool readShellWord(std::string_view text, size_t& pos, std::string_view stopChars,
                   std::string& word, std::string& error) {
  word.clear();
  error.clear();
  bool started = false;
  while (pos < text.size()) {
    char c = text[pos];
    if (isBlank(c) || stopChars.find(c) != std::string_view::npos) break;
    if (c == '\'') {
      size_t close = text.find('\'', pos + 1);
      if (close == std::string_view::npos) {
        error = "unterminated single quote at column " + std::to_string(pos + 1);
        return false;
      }
      word.append(text.substr(pos + 1, close - pos - 1));
      pos = close + 1;
    } else if (c == '"') {
      size_t open = pos++;
      for (;;) {
        if (pos >= text.size()) {
          error = "unterminated double quote at column " + std::to_string(open + 1);
          return false;
        }
        char d = text[pos];
        if (d == '"') {
          ++pos;
          break;
        }
        if (d == '\\' && pos + 1 < text.size()) {
          char next = text[pos + 1];
          if (next == '"' || next == '\\' || next == '$' || next == '`') {
            word += next;
            pos += 2;
            continue;
          }
          if (next == '\n') {
            pos += 2;
            continue;
          }
        }
        word += d;
        ++pos;
      }
    } else if (c == '\\') {
      if (pos + 1 >= text.size()) {
        error = "trailing backslash at column " + std::to_string(pos + 1);
        return false;
      }
      if (text[pos + 1] != '\n') word += text[pos + 1];
      pos += 2;
    } else {
      word += c;
      ++pos;
    }
    started = true;
  }
  return started;
}

Parsed<std::vector<std::string>> splitShellWords(std::string_view line) {
  std::vector<std::string> words;
  size_t pos = 0;
  for (;;) {
    while (pos < line.size() && isBlank(line[pos]))
      ++pos;
    if (pos >= line.size() || line[pos] == '#') break;
    std::string word, error;
    if (!readShellWord(line, pos, {}, word, error)) {
      if (!error.empty()) return Parsed<std::vector<std::string>>::failure(error);
      break;
    }
    words.push_back(std::move(word));
  }
  Parsed<std::vector<std::string>> parsed;
  parsed.value = std::move(words);
  return parsed;
}

std::string shellQuote(std::string_view word) {
  bool plain = !word.empty();
  for (char c : word) {
    bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                std::string_view("-_./:=@%+,").find(c) != std::string_view::npos;
    if (!safe) plain = false;
  }
  if (plain) return std::string(word);
  std::string quoted = "'";
  for (char c : word) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  quoted += '\'';
  return quoted;
}

bool isValidUtf8(std::string_view bytes) {
  for (size_t pos = 0; pos < bytes.size();) {
    size_t length = utf8SequenceLength(bytes, pos);
    if (length == 0) return false;
    pos += length;
  }
  return true;
}

std::string base64Encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  auto at = [&](size_t k) { return static_cast<uint32_t>(static_cast<unsigned char>(bytes[k])); };
  for (; i + 3 <= bytes.size(); i += 3) {
    uint32_t group = at(i) << 16 | at(i + 1) << 8 | at(i + 2);
    for (int shift = 18; shift >= 0; shift -= 6)
      out += BASE64_ALPHABET[(group >> shift) & 0x3f];
  }
  size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t group = at(i) << 16 | (rest == 2 ? at(i + 1) << 8 : 0);
    out += BASE64_ALPHABET[(group >> 18) & 0x3f];
    out += BASE64_ALPHABET[(group >> 12) & 0x3f];
    out += rest == 2 ? BASE64_ALPHABET[(group >> 6) & 0x3f] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  for (size_t i = 0; i < text.size(); i += 4) {
    bool last = i + 4 == text.size();
    size_t padding = 0;
    if (last && text[i + 3] == '=') padding = text[i + 2] == '=' ? 2 : 1;
    uint32_t group = 0;
    for (size_t k = 0; k < 4; ++k) {
      int value = k < 4 - padding ? base64Value(text[i + k]) : 0;
      if (value < 0) return std::nullopt;
      group = group << 6 | static_cast<uint32_t>(value);
    }
    // Canonical form only: the bits the padding drops must be zero.
    if ((padding == 1 && (group & 0xff) != 0) || (padding == 2 && (group & 0xffff) != 0)) {
      return std::nullopt;
    }
    out += static_cast<char>(group >> 16);
    if (padding < 2) out += static_cast<char>((group >> 8) & 0xff);
    if (padding < 1) out += static_cast<char>(group & 0xff);
  }
  return out;
}

std::string displayText(std::string_view bytes) {
  std::string out;
  for (size_t pos = 0; pos < bytes.size();) {
    auto byte = static_cast<unsigned char>(bytes[pos]);
    size_t length = utf8SequenceLength(bytes, pos);
    if (length == 0) {
      appendHexByte(out, byte);
      ++pos;
      continue;
    }
    if (length == 1) {
      switch (byte) {
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\t':
          out += "\\t";
          break;
        case '\r':
          out += "\\r";
          break;
        default:
          if (byte < 0x20 || byte == 0x7f) {
            appendHexByte(out, byte);
          } else {
            out += static_cast<char>(byte);
          }
      }
    } else {
      out.append(bytes.substr(pos, length));
    }
    pos += length;
  }
  return out;
}

size_t displayWidth(std::string_view utf8) {
  size_t width = 0;
  for (char c : utf8) {
    if ((static_cast<unsigned char>(c) & 0xc0) != 0x80) ++width;
  }
  return width;
}

std::string formatTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      widths[i] = std::max(widths[i], displayWidth(row[i]));
    }
  }
  std::string out;
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      out += row[i];
      if (i + 1 < row.size()) out.append(widths[i] - displayWidth(row[i]) + 2, ' ');
    }
    out += '\n';
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// JSON

std::string jsonQuote(std::string_view text) {
  std::string out = "\"";
  for (size_t pos = 0; pos < text.size();) {
    auto byte = static_cast<unsigned char>(text[pos]);
    size_t length = utf8SequenceLength(text, pos);
    if (length == 0) {
      out += "\xef\xbf\xbd";  // U+FFFD
      ++pos;
      continue;
    }
    if (length > 1) {
      out.append(text.substr(pos, length));
      pos += length;
      continue;
    }
    ++pos;
    switch (byte) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (byte < 0x20 || byte == 0x7f) {
          const char* digits = "0123456789abcdef";
          out += "\\u00";
          out += digits[byte >> 4];
          out += digits[byte & 0xf];
        } else {
          out += static_cast<char>(byte);
        }
    }
  }
  out += '"';
  return out;
}

void JsonWriter::beforeValue() {
  if (afterKey) {
    afterKey = false;
    return;
  }
  if (!needComma.empty()) {
    if (needComma.back()) out += ',';
    needComma.back() = true;
  }
}

JsonWriter& JsonWriter::beginObject() {
  beforeValue();
  out += '{';
  needComma.push_back(false);
  return *this;
}

JsonWriter& JsonWriter::endObject() {
  out += '}';
  needComma.pop_back();
  return *this;
}

JsonWriter& JsonWriter::beginArray() {
  beforeValue();
  out += '[';
  needComma.push_back(false);
  return *this;
}

JsonWriter& JsonWriter::endArray() {
  out += ']';
  needComma.pop_back();
  return *this;
}

JsonWriter& JsonWriter::key(std::string_view name) {
  beforeValue();
  out += jsonQuote(name);
  out += ':';
  afterKey = true;
  return *this;
}

JsonWriter& JsonWriter::string(std::string_view text) {
  beforeValue();
  out += jsonQuote(text);
  return *this;
}

JsonWriter& JsonWriter::number(uint64_t value) {
  beforeValue();
  out += std::to_string(value);
  return *this;
}

JsonWriter& JsonWriter::signedNumber(int64_t value) {
  beforeValue();
  out += std::to_string(value);
  return *this;
}

JsonWriter& JsonWriter::boolean(bool value) {
  beforeValue();
  out += value ? "true" : "false";
  return *this;
}

JsonWriter& JsonWriter::null() {
  beforeValue();
  out += "null";
  return *this;
}

JsonWriter& JsonWriter::bytesField(std::string_view name, std::string_view bytes) {
  if (isValidUtf8(bytes)) return key(name).string(bytes);
  return key(std::string(name) + "_b64").string(base64Encode(bytes));
}

}  // namespace synod::clients
