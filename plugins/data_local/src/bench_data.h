// Decode + resize throughput benchmark of the data_local pipeline next to the ffmpeg CLI.
#pragma once

#include <string>
#include <vector>

namespace st::plugins::data_local {

/// args: [--clips N] [--seconds S] [--dir DIR]; prints a table; returns the exit code.
int run_bench_data(const std::vector<std::string>& args);

}  // namespace st::plugins::data_local
