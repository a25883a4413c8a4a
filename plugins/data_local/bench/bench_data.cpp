// st-bench-data: the data benchmark as a standalone program (same as `st-host bench data`).
#include <string>
#include <vector>

#include "bench_data.h"

int main(int argc, char** argv) {
    return st::plugins::data_local::run_bench_data(std::vector<std::string>(argv + 1, argv + argc));
}
