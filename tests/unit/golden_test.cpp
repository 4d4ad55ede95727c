// SPDX-License-Identifier: MIT
// golden_test.cpp - Postfix-style golden transcripts (smtpd_check.in/.ref): each
// tests/data/golden/NAME.in is replayed through a real in-process Server over one UNIX-socket
// connection, one request at a time as Postfix does, and the replies are compared with NAME.ref.
//
// The .ref files are written by hand from DESIGN.md section 2 (reasons in NAME.md). NAME.toml, if
// present, is the config for NAME.in, else relayguard.toml; @SOCKET@ and @DATA_DIR@ are substituted.
// Every read has a deadline, so a server that does not answer fails the test instead of hanging it.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include <relayguard/logging.hpp>
#include <relayguard/policy.hpp>
#include <relayguard/server.hpp>

#include "testing/test_support.hpp"

namespace {

namespace fs = std::filesystem;
using relayguard::testing::read_file;
using relayguard::testing::test_data_dir;
using relayguard::testing::write_file;
using Clock = std::chrono::steady_clock;

// A reply that takes longer than this is a failure (the server answers in microseconds).
constexpr std::chrono::milliseconds reply_limit{5000};

fs::path golden_dir() { return test_data_dir() / "golden"; }

// transcript_names - NAME of every NAME.in, sorted.
std::vector<std::string> transcript_names()
{
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(golden_dir()))
        if (e.is_regular_file() && e.path().extension() == ".in") names.push_back(e.path().stem().string());
    std::sort(names.begin(), names.end());
    return names;
}

// split_messages - the requests (or replies) of a transcript, each with its ending "\n\n".
// Bytes after the last "\n\n" are returned as a last, incomplete element (a broken file).
std::vector<std::string> split_messages(std::string_view text)
{
    std::vector<std::string> out;
    while (!text.empty()) {
        auto end = text.find("\n\n");
        if (end == std::string_view::npos) {
            out.emplace_back(text);
            break;
        }
        out.emplace_back(text.substr(0, end + 2));
        text.remove_prefix(end + 2);
    }
    return out;
}

void replace_all(std::string& text, std::string_view from, const std::string& to)
{
    for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
        text.replace(at, from.size(), to);
}

// attribute - the value of `name` in a request, for failure messages.
std::string attribute(std::string_view request, std::string_view name)
{
    const std::string key = "\n" + std::string(name) + "=";
    const std::string text = "\n" + std::string(request);
    auto at = text.find(key);
    if (at == std::string::npos) return "(absent)";
    at += key.size();
    return text.substr(at, text.find('\n', at) - at);
}

// describe - a one-line summary of a request for failure messages.
std::string describe(std::string_view request)
{
    return attribute(request, "protocol_state") + " client=" + attribute(request, "client_address") +
           " port=" + attribute(request, "server_port") + " login=" + attribute(request, "sasl_username") +
           " sender=<" + attribute(request, "sender") + "> recipient=<" + attribute(request, "recipient") + ">";
}

// Connection - one client socket; ask() sends a request and returns its reply (or what came
// before EOF or the deadline).
class Connection {
public:
    explicit Connection(const fs::path& socket_path)
    {
        fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
        if (fd_ >= 0 && ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
            ::close(fd_);
            fd_ = -1;
        }
    }
    Connection(const Connection&) = delete;
    Connection& operator=(const Connection&) = delete;
    ~Connection()
    {
        if (fd_ >= 0) ::close(fd_);
    }

    bool connected() const noexcept { return fd_ >= 0; }

    std::string ask(std::string_view request)
    {
        for (std::string_view rest = request; !rest.empty();) {
            ssize_t n = ::write(fd_, rest.data(), rest.size());
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return "<write failed: " + std::string(std::strerror(errno)) + ">";
            rest.remove_prefix(static_cast<std::size_t>(n));
        }
        const auto deadline = Clock::now() + reply_limit;
        for (;;) {
            if (auto end = buf_.find("\n\n"); end != std::string::npos) {
                std::string reply = buf_.substr(0, end + 2);
                buf_.erase(0, end + 2);
                return reply;
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            pollfd p{fd_, POLLIN, 0};
            if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0)
                return buf_ + "<no reply within " + std::to_string(reply_limit.count()) + " ms>";
            char chunk[4096];
            ssize_t n = ::read(fd_, chunk, sizeof chunk);
            if (n <= 0) return buf_ + "<connection closed>";
            buf_.append(chunk, static_cast<std::size_t>(n));
        }
    }

private:
    int fd_ = -1;
    std::string buf_;
};

class GoldenTranscript : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTranscript, RepliesMatchReference)
{
    const std::string name = GetParam();
    const fs::path in_path = golden_dir() / (name + ".in");
    const fs::path ref_path = golden_dir() / (name + ".ref");
    fs::path config_template = golden_dir() / (name + ".toml");
    if (!fs::exists(config_template)) config_template = golden_dir() / "relayguard.toml";
    ASSERT_TRUE(fs::exists(ref_path)) << name << ".in has no " << name << ".ref";

    relayguard::testing::TempDir dir;
    const fs::path socket_path = dir / "golden.sock";
    std::string config_text = read_file(config_template);
    replace_all(config_text, "@SOCKET@", socket_path.string());
    replace_all(config_text, "@DATA_DIR@", golden_dir().string());
    const fs::path config_path = dir / config_template.filename().string();
    write_file(config_path, config_text);

    auto snapshot = relayguard::load_snapshot(config_path.string());
    ASSERT_TRUE(snapshot) << "golden config " << config_template.filename() << ": " << snapshot.error().to_string();
    relayguard::init_logging((*snapshot)->config.log);

    relayguard::Server server(*snapshot);
    ASSERT_NO_THROW(server.bind());
    server.start();

    const std::vector<std::string> requests = split_messages(read_file(in_path));
    const std::vector<std::string> want = split_messages(read_file(ref_path));
    ASSERT_FALSE(requests.empty()) << name << ".in is empty";
    ASSERT_TRUE(requests.back().ends_with("\n\n")) << name << ".in: the last request has no ending empty line";
    ASSERT_EQ(requests.size(), want.size()) << name << ".in has " << requests.size() << " requests but " << name
                                            << ".ref has " << want.size() << " replies";

    Connection connection(socket_path);
    ASSERT_TRUE(connection.connected()) << "connect " << socket_path << ": " << std::strerror(errno);
    for (std::size_t i = 0; i < requests.size(); ++i) {
        const std::string got = connection.ask(requests[i]);
        EXPECT_EQ(got, want[i]) << name << ".in request " << (i + 1) << " (" << describe(requests[i])
                                << "; see item " << (i + 1) << " of " << name << ".md)\n"
                                << "got=" << got << "want=" << want[i];
    }

    server.stop();
    server.wait();
}

INSTANTIATE_TEST_SUITE_P(Golden, GoldenTranscript, ::testing::ValuesIn(transcript_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                             std::string id = info.param;
                             for (char& c : id)
                                 if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                             return id;
                         });

// Every transcript is complete: a reference and an explanation next to it.
TEST(GoldenFiles, EveryTranscriptHasReferenceAndExplanation)
{
    const auto names = transcript_names();
    EXPECT_GE(names.size(), 1u);
    for (const auto& name : names) {
        EXPECT_TRUE(fs::exists(golden_dir() / (name + ".ref"))) << name;
        EXPECT_TRUE(fs::exists(golden_dir() / (name + ".md"))) << name;
    }
}

} // namespace
