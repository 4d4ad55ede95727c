// SPDX-License-Identifier: MIT
// compromise_test.cpp - the compromise ladder end to end: the real daemon, a real redis-server
// (or the embedded store), relayguardctl, and a raw SUBSCRIBE on the events channel.
//
// One login used from ever more client networks climbs warn -> hold -> suspend at the configured
// thresholds; each step is published exactly once; shadow rungs answer as the rung below; rate
// refusals climb the same ladder; the event command runs, and one that hangs is killed.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/core.h>
#include <gtest/gtest.h>

#include <relayguard/config.hpp>

#include "testing/daemon_process.hpp"
#include "testing/redis_server.hpp"
#include "testing/test_support.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using relayguard::testing::DaemonProcess;
using relayguard::testing::PolicyClient;
using relayguard::testing::RedisServer;
using relayguard::testing::TempDir;
using relayguard::testing::binary_dir;
using relayguard::testing::count_of;
using relayguard::testing::write_file;
using Clock = std::chrono::steady_clock;

const std::string suspended_reply(relayguard::default_suspended_reply);
const std::string hold_reply(relayguard::default_hold_reply);

std::string action(std::string_view text) { return fmt::format("action={}\n\n", text); }

// rcpt - an authenticated RCPT over submission from `client`.
std::string rcpt(std::string_view login, std::string_view client, int n)
{
    return fmt::format("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
                       "client_address={1}\nserver_port=587\nsender={0}\nrecipient=r{2}@example.net\n"
                       "instance=9.{2}\nsasl_method=PLAIN\nsasl_username={0}\nencryption_protocol=TLSv1.3\n\n",
                       login, client, n);
}

// A SUBSCRIBE on a raw UNIX socket: the JSON payloads of the messages received.
class Subscriber {
public:
    Subscriber(const std::string& redis_socket, const std::string& channel)
    {
        fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", redis_socket.c_str());
        if (connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw std::runtime_error("connect");
        const std::string cmd = fmt::format("*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{}\r\n", channel.size(), channel);
        if (write(fd_, cmd.data(), cmd.size()) != static_cast<ssize_t>(cmd.size())) throw std::runtime_error("write");
        // The subscription is confirmed before the test sends load.
        wait_for([&] { return buf_.find("subscribe") != std::string::npos; }, 5s);
    }
    ~Subscriber() { close(fd_); }

    // events - the JSON messages so far (each one line: event_json() never writes a CR or LF).
    std::vector<std::string> events() const
    {
        std::vector<std::string> out;
        for (std::size_t at = 0; (at = buf_.find("\r\n{\"event\"", at)) != std::string::npos;) {
            at += 2;
            out.push_back(buf_.substr(at, buf_.find("\r\n", at) - at));
        }
        return out;
    }
    std::size_t count(std::string_view event) const
    {
        std::size_t n = 0;
        for (const auto& e : events()) n += e.starts_with(fmt::format("{{\"event\":\"{}\"", event));
        return n;
    }

    // wait_for - read until `done()` or the limit.
    template <class Done>
    bool wait_for(Done done, std::chrono::milliseconds limit = 10s)
    {
        const auto deadline = Clock::now() + limit;
        while (!done()) {
            pollfd p{fd_, POLLIN, 0};
            if (poll(&p, 1, relayguard::testing::remaining_ms(deadline)) <= 0) return done();
            char b[4096];
            const ssize_t n = read(fd_, b, sizeof b);
            if (n <= 0) return done();
            buf_.append(b, static_cast<std::size_t>(n));
        }
        return true;
    }

private:
    int fd_ = -1;
    std::string buf_;
};

class Compromise : public ::testing::Test {
protected:
    // start - the daemon with `compromise` (TOML after [compromise]) and `extra` sections.
    void start(const std::string& compromise, const std::string& extra = "", bool redis = true)
    {
        const std::string store =
            redis ? fmt::format("[store]\ntype = \"redis\"\non_error = \"defer\"\n[store.redis]\naddress = \"unix:{}\"\n"
                                "timeout = \"2s\"\n",
                                redis_.unix_path())
                  : "[store]\ntype = \"embedded\"\n";
        config_ = dir_ / "relayguard.toml";
        write_file(config_, fmt::format("[server]\nlisten = [\"unix:{}\"]\nthreads = 1\n\n[domains]\nlocal = "
                                        "[\"example.com\"]\n\n{}\n[compromise]\nenabled = true\n{}\n{}\n",
                                        socket_.string(), store, compromise, extra));
        daemon_ = std::make_unique<DaemonProcess>(config_, dir_.path(), "daemon");
        ASSERT_TRUE(daemon_->wait_started()) << "daemon did not start:\n" << daemon_->log();
        client_.emplace(PolicyClient::unix_socket(socket_));
        ASSERT_TRUE(client_->connected());
    }

    // ctl - relayguardctl --config CONFIG ARGS; its stdout (the test fails on a non-zero exit).
    std::string ctl(const std::string& args)
    {
        const std::string cmd = fmt::format("{} --config {} {}", (binary_dir() / "relayguardctl").string(),
                                            config_.string(), args);
        std::FILE* p = popen(cmd.c_str(), "r");
        std::string out;
        char b[4096];
        std::size_t n;
        while ((n = std::fread(b, 1, sizeof b, p)) > 0) out.append(b, n);
        EXPECT_EQ(pclose(p), 0) << cmd << "\n" << out;
        return out;
    }

    // climb - one request per network 10.0.N.7, N = 1..count; the answers.
    std::vector<std::string> climb(std::string_view login, int count)
    {
        std::vector<std::string> out;
        for (int n = 1; n <= count; ++n) out.push_back(client_->ask(rcpt(login, fmt::format("10.0.{}.7", n), n)));
        return out;
    }

    TempDir dir_;
    RedisServer redis_;
    fs::path socket_ = dir_ / "policy.sock";
    fs::path config_;
    std::unique_ptr<DaemonProcess> daemon_;
    std::optional<PolicyClient> client_;
};

constexpr std::string_view ladder = "window = \"1h\"\n[compromise.warn]\nnetworks = 3\n[compromise.hold]\nnetworks = 5\n"
                                    "[compromise.suspend]\nnetworks = 8\n";

// want_ladder - DUNNO below hold, HOLD from the 5th network, the suspended reply from the 8th.
std::vector<std::string> want_ladder(int count)
{
    std::vector<std::string> want;
    for (int n = 1; n <= count; ++n)
        want.push_back(action(n < 5 ? std::string("DUNNO") : n < 8 ? hold_reply : suspended_reply));
    return want;
}

TEST_F(Compromise, ManyNetworksWarnThenHoldThenSuspendAndPublishEachOnce)
{
    start(std::string(ladder));
    Subscriber sub(redis_.unix_path(), "relayguard:events");
    const std::string login = "mallory@example.com";
    EXPECT_EQ(climb(login, 9), want_ladder(9));

    ASSERT_TRUE(sub.wait_for([&] { return sub.count("suspend") == 1; })) << "no suspend event";
    EXPECT_EQ(sub.count("warn"), 1u);
    EXPECT_EQ(sub.count("hold"), 1u);
    EXPECT_EQ(sub.count("suspend"), 1u);
    EXPECT_EQ(sub.events().size(), 3u) << "got=" << fmt::format("{}", sub.events().size());
    const std::string suspend_event = sub.events().back();
    EXPECT_NE(suspend_event.find("\"login\":\"mallory@example.com\""), std::string::npos) << suspend_event;
    EXPECT_NE(suspend_event.find("\"count\":8"), std::string::npos) << suspend_event;
    const std::string log = daemon_->log();
    EXPECT_EQ(count_of(log, "compromise ladder: warn "), 1u) << log;
    EXPECT_EQ(count_of(log, "compromise ladder: suspend "), 1u) << log;

    const std::string listed = ctl("suspended --login mallory@example.com --json");
    EXPECT_NE(listed.find("\"by\":\"automatic\""), std::string::npos) << "got=" << listed;
    EXPECT_NE(listed.find("distinct client networks"), std::string::npos) << "got=" << listed;

    // Another login is untouched; the operator lifts the suspension.
    EXPECT_EQ(client_->ask(rcpt("other@example.com", "10.0.1.7", 20)), action("DUNNO"));
    // unsuspend also clears the ladder's counts and event markers: the login starts afresh (one
    // network so far), and a second climb is reported again.
    ctl("unsuspend --login mallory@example.com");
    EXPECT_EQ(client_->ask(rcpt(login, "10.0.1.7", 21)), action("DUNNO")) << "counts kept after unsuspend";
    EXPECT_EQ(climb(login, 9), want_ladder(9)) << "second climb";
    ASSERT_TRUE(sub.wait_for([&] { return sub.count("suspend") == 2; })) << "second suspension not published";
    EXPECT_EQ(sub.count("warn"), 2u);
}

TEST_F(Compromise, ShadowHoldAnswersDunnoAndPublishesAShadowEvent)
{
    start("[compromise.hold]\nnetworks = 3\nshadow = true\n");
    Subscriber sub(redis_.unix_path(), "relayguard:events");
    const auto answers = climb("sam@example.com", 4);
    for (const auto& a : answers) EXPECT_EQ(a, action("DUNNO"));
    ASSERT_TRUE(sub.wait_for([&] { return sub.count("shadow_hold") == 1; })) << "no shadow_hold event";
    EXPECT_EQ(sub.count("hold"), 0u);
    EXPECT_TRUE(daemon_->wait_for_log("shadow hold: "));
}

TEST_F(Compromise, RateRefusalsClimbTheLadderToSuspend)
{
    start("[compromise.warn]\nrate_refusals = 1\n[compromise.hold]\nrate_refusals = 2\n[compromise.suspend]\n"
          "rate_refusals = 3\n",
          "[[limit]]\nname = \"login_recipients\"\nkey = \"sasl_username\"\nunit = \"recipients\"\nrates = \"1/1h\"\n");
    Subscriber sub(redis_.unix_path(), "relayguard:events");
    const std::string login = "rita@example.com";
    EXPECT_EQ(client_->ask(rcpt(login, "10.1.1.7", 1)), action("DUNNO"));
    // Refusals 1, 2, 3: each answered with the rate refusal; the third suspends.
    for (int n = 2; n <= 4; ++n) {
        const std::string a = client_->ask(rcpt(login, "10.1.1.7", n));
        EXPECT_TRUE(a.starts_with("action=450 4.7.1 Rate limit login_recipients exceeded")) << n << ": got=" << a;
    }
    EXPECT_EQ(client_->ask(rcpt(login, "10.1.1.7", 5)), action(suspended_reply)) << "from the next request";
    ASSERT_TRUE(sub.wait_for([&] { return sub.count("suspend") == 1; }));
    EXPECT_NE(sub.events().back().find("\"signal\":\"rate_refusals\""), std::string::npos) << sub.events().back();
}

TEST_F(Compromise, EventCommandGetsTheEventOnStdin)
{
    const fs::path out = dir_ / "events.out";
    write_file(out, ""); // watched for the event (inotify needs the file)
    start("[compromise.warn]\nnetworks = 1\n", fmt::format("[events]\ncommand = \"cat >> {}\"\n", out.string()));
    EXPECT_EQ(client_->ask(rcpt("tom@example.com", "10.2.1.7", 1)), action("DUNNO"));
    ASSERT_TRUE(relayguard::testing::wait_for_text(out, "\"event\":\"warn\"")) << daemon_->log();
    EXPECT_NE(relayguard::testing::slurp(out).find("\"login\":\"tom@example.com\""), std::string::npos);
}

TEST_F(Compromise, HangingEventCommandIsKilledWithoutDelayingAnswers)
{
    start("[compromise.warn]\nnetworks = 1\n", "[events]\ncommand = \"sleep 1000\"\ncommand_timeout = \"1s\"\n");
    const auto started = Clock::now();
    // Each login's first request reaches warn: three events queue behind the hanging one.
    for (int n = 1; n <= 3; ++n)
        EXPECT_EQ(client_->ask(rcpt(fmt::format("u{}@example.com", n), "10.3.1.7", n)), action("DUNNO"));
    EXPECT_LT(Clock::now() - started, 900ms) << "answers waited for the command";
    EXPECT_TRUE(daemon_->wait_for_log("event command killed after 1000 ms")) << daemon_->log();
}

TEST_F(Compromise, EmbeddedStoreClimbsTheSameLadder)
{
    start(std::string(ladder), "", /*redis=*/false);
    EXPECT_EQ(climb("eddie@example.com", 9), want_ladder(9));
    EXPECT_TRUE(daemon_->wait_for_log("compromise ladder: suspend login=eddie@example.com")) << daemon_->log();
}

} // namespace
