-- Adds one prompt per validation, taken in turn from a list.
--
-- Each on_validation_start appends the next prompt of PROMPTS to the prompts of that validation
-- (after the last one it starts again from the first). Set REPLACE = true to validate on the
-- rotating prompt only.
--
-- Use: "lua_hooks": ["scripts/hooks/rotate_validation_prompts.lua"] and edit the list below.

local PROMPTS = {
  "a red fox running through deep snow, morning light",
  "a timelapse of clouds rolling over a mountain ridge",
  "a paper boat drifting down a rainy street at night",
}
local REPLACE = false

local next_index = 1

st.on("on_validation_start", function(ev)
  local prompt = PROMPTS[next_index]
  next_index = next_index % #PROMPTS + 1
  if REPLACE or ev.prompts == nil then
    ev.prompts = { prompt }
  else
    table.insert(ev.prompts, prompt)
  end
  st.log("info", "validation prompt: " .. prompt)
end)
