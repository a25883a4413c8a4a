// Precompiled header of the family kit, reused by the Wan core, S2V and their plugins (same flags).
#pragma once
#include <ATen/ATen.h>
#include <fmt/core.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
