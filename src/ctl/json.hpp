// SPDX-License-Identifier: MIT
// json.hpp - a small JSON value for relayguardctl --json output (private to the ctl module).
//
// Build a tree, dump() it on one line. Objects keep insertion order (stable output for diffs
// and tests). Strings are bytes: valid UTF-8 is kept, any other byte is written as \u00XX so the
// output is always valid JSON whatever a login or address held. Not thread-safe (a value).
#pragma once

#include <concepts>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace relayguard::ctl {

class Json {
public:
    using Array = std::vector<Json>;
    using Object = std::vector<std::pair<std::string, Json>>;

    Json() = default; // null
    Json(std::nullptr_t) {}
    Json(bool b) : v_(b) {}
    template <std::signed_integral T>
    Json(T n) : v_(static_cast<std::int64_t>(n))
    {
    }
    template <std::unsigned_integral T>
        requires(!std::same_as<T, bool>)
    Json(T n) : v_(static_cast<std::uint64_t>(n))
    {
    }
    Json(std::string s) : v_(std::move(s)) {}
    Json(std::string_view s) : v_(std::string(s)) {}
    Json(const char* s) : v_(std::string(s)) {}

    static Json array() { return Json(Array{}); }
    static Json object() { return Json(Object{}); }

    // push - append to an array. set - add a member to an object (no duplicate check).
    Json& push(Json value);
    Json& set(std::string key, Json value);

    std::string dump() const;

private:
    explicit Json(Array a) : v_(std::move(a)) {}
    explicit Json(Object o) : v_(std::move(o)) {}
    void dump_to(std::string& out) const;

    std::variant<std::nullptr_t, bool, std::int64_t, std::uint64_t, std::string, Array, Object> v_{nullptr};
};

// append_json_string - `s` as a quoted JSON string.
void append_json_string(std::string& out, std::string_view s);

} // namespace relayguard::ctl
