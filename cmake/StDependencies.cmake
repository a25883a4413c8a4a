# Dependencies of the SDK (and so of every plugin). Shared with the installed package config, which
# includes this same file, so third-party plugins see exactly the same packages.
find_package(Torch REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(tomlplusplus REQUIRED)
find_package(fmt REQUIRED)
# TorchConfig adds -D_GLIBCXX_USE_CXX11_ABI=... to TORCH_CXX_FLAGS; it must be on every target.
separate_arguments(ST_TORCH_CXX_FLAGS UNIX_COMMAND "${TORCH_CXX_FLAGS}")
