// Precompiled header of st_data_local_core (never included by its headers).
#pragma once
#include <ATen/ATen.h>
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <filesystem>
#include <map>
#include <string>
#include <vector>
