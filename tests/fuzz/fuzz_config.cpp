// SPDX-License-Identifier: MIT
// fuzz_config.cpp - libFuzzer target: parse_config() on arbitrary text.
//
// The config file is trusted, but a typo in it must give an error message, never a crash, a
// hang or a Config that breaks the rules load_config() promises. Properties: errors and warnings
// name the file and a line of it; an accepted Config has a listener and consistent protocol
// limits. Reads no file unless the text names one (store.redis.password_file), so run it with
// stdin closed. Built as libFuzzer binary fuzz_config and as the test fuzz_replay_config.
#include <relayguard/config.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"

namespace relayguard::fuzz {
namespace {

// The name the text is parsed under; every message must carry it.
constexpr std::string_view config_path = "fuzz.toml";

// check_message - a warning or error line: "fuzz.toml:LINE: ..." with LINE in the text.
void check_message(const std::string& message, std::size_t text_lines)
{
    FUZZ_CHECK(message.starts_with(std::string(config_path) + ":"),
               "got=" + escaped(message) + " want=prefix " + std::string(config_path) + ":");
    const std::string_view rest = std::string_view(message).substr(config_path.size() + 1);
    std::size_t line = 0;
    std::size_t digits = 0;
    while (digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9' && digits < 10)
        line = line * 10 + static_cast<std::size_t>(rest[digits++] - '0');
    if (digits > 0) // a message about the whole file has no line
        FUZZ_CHECK(line >= 1 && line <= text_lines,
                   "line got=" + std::to_string(line) + " want 1.." + std::to_string(text_lines) + " in " + escaped(message));
}

} // namespace
} // namespace relayguard::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace relayguard;
    using namespace relayguard::fuzz;
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    // Lines as an editor counts them: a last line without "\n" still counts.
    const std::size_t text_lines = static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')) + 1;

    std::vector<std::string> warnings;
    const auto result = parse_config(text, std::string(config_path), &warnings);
    if (!result) {
        const ConfigError& e = result.error();
        FUZZ_CHECK(e.file == config_path, "file got=" + escaped(e.file));
        FUZZ_CHECK(!e.message.empty(), "an error without a message: " + escaped(e.to_string()));
        check_message(e.to_string(), text_lines);
        return 0;
    }
    for (const auto& w : warnings) check_message(w, text_lines);

    const Config& c = *result;
    FUZZ_CHECK(!c.server.listen.empty(), "accepted a config without a listener");
    FUZZ_CHECK(c.protocol.max_line_bytes <= c.protocol.max_request_bytes,
               "max_line_bytes got=" + std::to_string(c.protocol.max_line_bytes) +
                   " want<= max_request_bytes=" + std::to_string(c.protocol.max_request_bytes));
    FUZZ_CHECK(c.protocol.max_attributes > 0, "accepted max_attributes = 0");
    for (const auto& ep : c.server.listen) {
        if (ep.kind == Endpoint::Kind::unix_socket) {
            FUZZ_CHECK(ep.path.starts_with('/'), "unix listener path got=" + escaped(ep.path) + " want=absolute");
        } else {
            FUZZ_CHECK(!ep.host.empty(), "inet listener without a host: " + escaped(ep.text));
        }
    }
    return 0;
}
