// SPDX-License-Identifier: MIT
// privileges_test.cpp - server.user/group/allow_root and --allow-root through the real daemon.
//
// Started as root (skipped otherwise), the daemon binds a UNIX socket, a TCP port below 1024
// and the metrics port, then drops to "nobody" for good: checked in /proc/PID/status (every
// thread), through the sockets, and by a reload as the new user. Root without a user, unknown
// users and groups, and --check-config are checked by exit status and message.
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "testing/daemon_process.hpp"
#include "testing/test_support.hpp"

namespace {

namespace fs = std::filesystem;
using relayguard::testing::DaemonArgs;
using relayguard::testing::DaemonProcess;
using relayguard::testing::PolicyClient;
using relayguard::testing::TempDir;
using relayguard::testing::write_file;

// The unprivileged account every Debian system has.
constexpr const char* drop_user = "nobody";
// A name no system has (valid per the config's name rules).
constexpr const char* missing_name = "relayguard-test-no-such-name";
// Privileged ports tried for a listener that only root can bind (the first free ones are used).
constexpr int first_low_port = 900;
constexpr int last_low_port = 1023;

const std::string relay_request = "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.7\n"
                                  "sender=someone@example.org\nrecipient=victim@example.net\n\n";
const std::string relay_reply = "action=554 5.7.1 Relay access denied\n\n";
const std::string refusal = "refusing to run as root: set server.user, or server.allow_root = true";

struct Account {
    uid_t uid = 0;
    gid_t gid = 0;
    std::string group; // name of the primary group
};

std::optional<Account> lookup(const char* user)
{
    const passwd* pw = getpwnam(user);
    if (!pw) return std::nullopt;
    Account a{pw->pw_uid, pw->pw_gid, {}};
    if (const group* gr = getgrgid(pw->pw_gid)) a.group = gr->gr_name;
    return a;
}

// status_field - the values of "NAME:" in a /proc/.../status file, split at white space.
std::vector<std::string> status_field(const fs::path& status, const std::string& name)
{
    std::istringstream in(relayguard::testing::slurp(status));
    std::string line;
    while (std::getline(in, line)) {
        if (!line.starts_with(name + ":")) continue;
        std::istringstream values(line.substr(name.size() + 1));
        std::vector<std::string> out;
        for (std::string v; values >> v;) out.push_back(v);
        return out;
    }
    return {"<no " + name + " line>"};
}

// free_low_ports - `count` ports below 1024 that nothing listens on now (bound and released).
std::vector<int> free_low_ports(std::size_t count)
{
    std::vector<int> ports;
    for (int p = first_low_port; p <= last_low_port && ports.size() < count; ++p) {
        const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = htons(static_cast<std::uint16_t>(p));
        if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) ports.push_back(p);
        close(fd);
    }
    return ports;
}

class Privileges : public ::testing::Test {
protected:
    void SetUp() override
    {
        if (geteuid() != 0) GTEST_SKIP() << "needs root: the daemon drops privileges only when started as root";
        // mkdtemp makes it 0700: the daemon, once it is nobody, must still read its config on
        // SIGHUP (a reload after the drop is part of what is tested).
        fs::permissions(dir_.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                         fs::perms::others_read | fs::perms::others_exec);
        socket_ = dir_ / "policy.sock";
    }

    fs::path write_config(const std::string& name, const std::string& text)
    {
        const fs::path path = dir_ / name;
        write_file(path, text);
        return path;
    }

    // config - a UNIX listener plus `server_extra` lines in [server], and `rest` after.
    std::string config(const std::string& server_extra, const std::string& rest = "") const
    {
        return fmt::format("[server]\nlisten = [\"unix:{}\"]\nthreads = 2\nshutdown_timeout = \"1s\"\n{}\n"
                           "[domains]\nlocal = [\"example.com\"]\n{}",
                           socket_.string(), server_extra, rest);
    }

    // run_to_exit - the daemon with exactly `args`; its exit code once it ended (-1: it did not).
    int run_to_exit(DaemonProcess& d)
    {
        const auto status = d.wait_exit();
        if (!status || !WIFEXITED(*status)) return -1;
        return WEXITSTATUS(*status);
    }

    TempDir dir_;
    fs::path socket_;
};

TEST_F(Privileges, RootWithUserBindsThenDropsForGood)
{
    const auto nobody = lookup(drop_user);
    if (!nobody) GTEST_SKIP() << "no user " << drop_user;
    const auto ports = free_low_ports(2);
    ASSERT_EQ(ports.size(), 2u) << "no two free ports in " << first_low_port << ".." << last_low_port;
    // The socket's directory belongs to the user, as the docs ask, so that it can remove the
    // socket at stop; its group is the user's, its mode narrower than the default 0666.
    const fs::path sockets = dir_ / "sockets";
    fs::create_directory(sockets);
    ASSERT_EQ(chown(sockets.c_str(), nobody->uid, nobody->gid), 0);
    socket_ = sockets / "policy.sock";

    const fs::path path = write_config(
        "relayguard.toml",
        fmt::format("[server]\nlisten = [\"unix:{}\", \"inet:127.0.0.1:{}\"]\nthreads = 2\nshutdown_timeout = \"1s\"\n"
                    "user = \"{}\"\nsocket_owner = \"{}\"\nsocket_group = \"{}\"\nsocket_mode = \"0660\"\n"
                    "[domains]\nlocal = [\"example.com\"]\n[metrics]\nlisten = \"inet:127.0.0.1:{}\"\n",
                    socket_.string(), ports[0], drop_user, drop_user, nobody->group, ports[1]));
    // Without --allow-root: with a user set it is not needed.
    DaemonProcess d(DaemonArgs{{"--foreground", "--config", path.string()}}, dir_.path());
    ASSERT_TRUE(d.wait_started()) << "stderr:\n" << d.log();
    EXPECT_NE(d.log().find(fmt::format("running as user {} (uid {})", drop_user, nobody->uid)), std::string::npos)
        << "got=" << d.log();

    // Every thread: real, effective, saved and filesystem ids are the user's; no capability left.
    const std::string uid = std::to_string(nobody->uid);
    const std::string gid = std::to_string(nobody->gid);
    const std::vector<std::string> want_uids(4, uid);
    const std::vector<std::string> want_gids(4, gid);
    std::size_t threads = 0;
    for (const auto& task : fs::directory_iterator(fs::path("/proc") / std::to_string(d.pid()) / "task")) {
        const fs::path status = task.path() / "status";
        ++threads;
        EXPECT_EQ(status_field(status, "Uid"), want_uids) << status;
        EXPECT_EQ(status_field(status, "Gid"), want_gids) << status;
        for (const auto& g : status_field(status, "Groups"))
            EXPECT_EQ(g, gid) << status << ": a supplementary group that is not the user's";
        EXPECT_EQ(status_field(status, "CapEff"), std::vector<std::string>{"0000000000000000"}) << status;
        EXPECT_EQ(status_field(status, "CapPrm"), std::vector<std::string>{"0000000000000000"}) << status;
    }
    EXPECT_GE(threads, 3u) << "main and two workers (and metrics) were checked";

    // The socket got owner, group and mode while the daemon was still root.
    struct stat st {};
    ASSERT_EQ(stat(socket_.c_str(), &st), 0) << socket_;
    EXPECT_EQ(st.st_uid, nobody->uid);
    EXPECT_EQ(st.st_gid, nobody->gid);
    EXPECT_EQ(st.st_mode & 07777, 0660u) << fmt::format("got={:o} want=660", st.st_mode & 07777);

    // Every listener answers: the UNIX socket, the privileged port, the metrics port.
    auto unix_client = PolicyClient::unix_socket(socket_);
    ASSERT_TRUE(unix_client.connected());
    EXPECT_EQ(unix_client.ask(relay_request), relay_reply);
    auto tcp_client = PolicyClient::tcp(static_cast<std::uint16_t>(ports[0]));
    ASSERT_TRUE(tcp_client.connected());
    EXPECT_EQ(tcp_client.ask(relay_request), relay_reply);
    auto http = PolicyClient::tcp(static_cast<std::uint16_t>(ports[1]));
    ASSERT_TRUE(http.connected());
    ASSERT_TRUE(http.send("GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"));
    const std::string response = http.read_reply();
    EXPECT_TRUE(response.starts_with("HTTP/1.1 200")) << "got=" << response;

    // A reload runs as the user: it reads the (world-readable) config again and serves it.
    write_file(path, relayguard::testing::slurp(path) + "[checks.relay]\nreply = \"554 5.7.1 No relaying here\"\n");
    ASSERT_EQ(kill(d.pid(), SIGHUP), 0);
    ASSERT_TRUE(d.wait_for_log("reloaded ")) << "stderr:\n" << d.log();
    auto after = PolicyClient::unix_socket(socket_);
    EXPECT_EQ(after.ask(relay_request), "action=554 5.7.1 No relaying here\n\n");

    const auto status = d.stop();
    ASSERT_TRUE(status && WIFEXITED(*status)) << "stderr:\n" << d.log();
    EXPECT_EQ(WEXITSTATUS(*status), 0) << "stderr:\n" << d.log();
    EXPECT_FALSE(fs::exists(socket_)) << "the user removes its socket from its own directory at stop";
}

TEST_F(Privileges, RootWithoutUserRefusesToStart)
{
    const fs::path path = write_config("relayguard.toml", config(""));
    DaemonProcess d(DaemonArgs{{"--foreground", "--config", path.string()}}, dir_.path());
    EXPECT_EQ(run_to_exit(d), 1) << "stderr:\n" << d.log();
    EXPECT_NE(d.log().find(refusal), std::string::npos) << "got=" << d.log() << " want=" << refusal;
    EXPECT_FALSE(fs::exists(socket_)) << "refused before binding";
}

TEST_F(Privileges, RootWithoutUserRunsWhenAllowed)
{
    struct Case {
        const char* name;
        std::string server_extra;
        std::vector<std::string> flags;
        const char* warning;
    };
    const Case cases[] = {
        {"flag", "", {"--allow-root"}, "running as root (--allow-root)"},
        {"config", "allow_root = true", {}, "running as root (server.allow_root)"},
    };
    for (const auto& c : cases) {
        const fs::path path = write_config(std::string(c.name) + ".toml", config(c.server_extra));
        std::vector<std::string> args{"--foreground", "--config", path.string()};
        args.insert(args.end(), c.flags.begin(), c.flags.end());
        DaemonProcess d(DaemonArgs{args}, dir_.path(), c.name);
        ASSERT_TRUE(d.wait_started()) << c.name << "; stderr:\n" << d.log();
        EXPECT_NE(d.log().find(c.warning), std::string::npos) << c.name << "; got=" << d.log();
        const fs::path status = fs::path("/proc") / std::to_string(d.pid()) / "status";
        EXPECT_EQ(status_field(status, "Uid"), std::vector<std::string>(4, "0")) << c.name;
        auto client = PolicyClient::unix_socket(socket_);
        EXPECT_EQ(client.ask(relay_request), relay_reply) << c.name;
        const auto exit = d.stop();
        ASSERT_TRUE(exit && WIFEXITED(*exit) && WEXITSTATUS(*exit) == 0) << c.name << "; stderr:\n" << d.log();
    }
}

TEST_F(Privileges, UnknownUserOrGroupIsAStartupErrorNamingTheKey)
{
    struct Case {
        const char* name;
        std::string server_extra;
        std::string want;
    };
    const Case cases[] = {
        {"user", fmt::format("user = \"{}\"", missing_name),
         fmt::format("server.user: unknown user \"{}\"", missing_name)},
        {"group", fmt::format("user = \"{}\"\ngroup = \"{}\"", drop_user, missing_name),
         fmt::format("server.group: unknown group \"{}\"", missing_name)},
    };
    for (const auto& c : cases) {
        const fs::path path = write_config(std::string(c.name) + ".toml", config(c.server_extra));
        // --allow-root too: an unknown name is an error whatever else allows.
        DaemonProcess d(DaemonArgs{{"--foreground", "--allow-root", "--config", path.string()}}, dir_.path(),
                        c.name);
        EXPECT_EQ(run_to_exit(d), 1) << c.name << "; stderr:\n" << d.log();
        const std::string want = path.string() + ": " + c.want;
        EXPECT_NE(d.log().find(want), std::string::npos) << "got=" << d.log() << " want=" << want;
        EXPECT_FALSE(fs::exists(socket_)) << c.name << ": refused before binding";
    }
}

TEST_F(Privileges, CheckConfigValidatesUserAndGroup)
{
    struct Case {
        const char* name;
        std::string server_extra;
        int want_exit;
        std::string want_err; // "" : no error line
    };
    const Case cases[] = {
        {"unknown_user", fmt::format("user = \"{}\"", missing_name), 1,
         fmt::format("server.user: unknown user \"{}\"", missing_name)},
        {"unknown_group", fmt::format("user = \"{}\"\ngroup = \"{}\"", drop_user, missing_name), 1,
         fmt::format("server.group: unknown group \"{}\"", missing_name)},
        {"known_user", fmt::format("user = \"{}\"", drop_user), 0, ""},
        // Whether the checking identity could run it is not judged: root without a user passes.
        {"no_user", "", 0, ""},
    };
    for (const auto& c : cases) {
        const fs::path path = write_config(std::string(c.name) + ".toml", config(c.server_extra));
        DaemonProcess d(DaemonArgs{{"--check-config", "--config", path.string()}}, dir_.path(), c.name);
        EXPECT_EQ(run_to_exit(d), c.want_exit) << c.name << "; stderr:\n" << d.log();
        if (!c.want_err.empty()) {
            const std::string want = path.string() + ": " + c.want_err + "\n";
            EXPECT_NE(d.log().find(want), std::string::npos) << "got=" << d.log() << " want=" << want;
        } else {
            EXPECT_EQ(relayguard::testing::slurp(dir_ / (std::string(c.name) + ".out")), path.string() + ": OK\n");
        }
        EXPECT_FALSE(fs::exists(socket_)) << "--check-config binds nothing";
    }
}

} // namespace
