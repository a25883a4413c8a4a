// Precompiled header of libst_sdk (never included by public headers).
#pragma once
#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <fmt/core.h>
#include <nlohmann/json.hpp>
#include <map>
#include <string>
#include <vector>
