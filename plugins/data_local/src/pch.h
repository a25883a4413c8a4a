// Precompiled header of st_data_local_core (never included by its headers).
#pragma once
#include <ATen/ATen.h>
#include <fmt/core.h>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
