// SPDX-License-Identifier: MIT
#include "testing/test_support.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <gtest/gtest.h>

namespace relayguard::testing {

std::string read_file(const std::filesystem::path& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        ADD_FAILURE() << "cannot read " << path;
        return {};
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void write_file(const std::filesystem::path& path, const std::string& content)
{
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    if (!out) throw std::runtime_error("cannot write " + path.string());
}

std::filesystem::path samples_dir() { return RELAYGUARD_SAMPLES_DIR; }
std::filesystem::path test_data_dir() { return RELAYGUARD_TEST_DATA_DIR; }
std::filesystem::path binary_dir() { return RELAYGUARD_BINARY_DIR; }

std::vector<std::filesystem::path> sample_files()
{
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::recursive_directory_iterator(samples_dir()))
        if (e.is_regular_file() && e.path().extension() == ".policy") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    return files;
}

TempDir::TempDir()
{
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/relayguard-test-XXXXXX";
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
}

TempDir::~TempDir()
{
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

} // namespace relayguard::testing
