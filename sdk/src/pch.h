// Precompiled header of libst_sdk (never included by public headers).
#pragma once
#include <ATen/ATen.h>
#include <fmt/core.h>
#include <torch/nn/module.h>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
