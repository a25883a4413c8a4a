#include "st/version.h"

namespace st::sdk {

int abi_major() {
    return ST_SDK_ABI_MAJOR;
}
int abi_minor() {
    return ST_SDK_ABI_MINOR;
}
const char* build_fingerprint() {
    return ST_BUILD_FINGERPRINT;
}
const char* version_string() {
    return ST_SDK_VERSION_STRING;
}

}  // namespace st::sdk
