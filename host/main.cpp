// st-host: the one binary. Everything lives in st_host_lib (host/src), so tests can drive it.
#include "cli.h"

int main(int argc, char** argv) {
    return st::host::run_cli(argc, argv);
}
