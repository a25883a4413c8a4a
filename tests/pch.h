// Precompiled header shared by every test executable.
#pragma once
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
