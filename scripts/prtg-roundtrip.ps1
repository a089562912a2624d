# prtg-roundtrip launcher for PRTG's EXE/Script Advanced sensor, PowerShell flavour: copy it into
# "<PRTG program dir>\Custom Sensors\EXEXML" and choose it as the sensor's EXE/Script. It finds
# a Python and runs "python -m prtg_roundtrip ARGS" (the installed package) or
# "python -S prtg-roundtrip.pyz ARGS" (the single file next to this script; -S: it needs nothing
# from site-packages, so that Python's site-packages cost no start-up time).
#
# Where it looks, in this order (docs/launchers.md), the same as prtg-roundtrip.bat:
#   0. $env:PRTG_ROUNDTRIP_PYTHON: a python.exe; when set, it is the only candidate
#   1. a virtual environment in this script's folder: .venv\Scripts\python.exe, then
#      prtg-roundtrip-venv\Scripts\python.exe
#   2. an installed prtg-roundtrip.exe on PATH
#   3. PRTG's own Python: ..\..\python\python.exe from this script's folder (Custom
#      Sensors\EXEXML), then python\python.exe in the PRTG folder the registry names
#      (HKLM:\SOFTWARE\WOW6432Node\Paessler\PRTG Network Monitor, value exepath), then
#      PRTG Network Monitor\python\python.exe under ${env:ProgramFiles(x86)} and $env:ProgramFiles
#   4. py.exe -3 on PATH, then python.exe on PATH
# Steps 0 and 3-4 run the installed package if the interpreter has it, else the single file
# prtg-roundtrip.pyz next to this script; an interpreter with neither is skipped.
# If none is found it prints a PRTG error document naming the places it looked (XML; JSON with
# --format prtg-json; Script v2 JSON with --format script-v2 or without arguments) and exits 0.
#
# Arguments: PRTG starts PowerShell scripts through powershell.exe, so the Parameters field is
# read with PowerShell's rules: put values in single quotes ('a b', '100%', 'x&y'); a single quote
# inside is written twice. Windows PowerShell 5.1 drops empty arguments and does not escape
# embedded double quotes when it starts a program with "& python @args", so this script builds
# the Windows command line itself (MSVC C runtime quoting, as Python parses it) and copies the
# child's stdout byte for byte: nothing is re-encoded or re-split by PowerShell.

$ErrorActionPreference = 'Stop'
$utf8 = New-Object System.Text.UTF8Encoding $false
try { [Console]::OutputEncoding = $utf8 } catch { }  # no console (PRTG): bytes are written raw below
$OutputEncoding = $utf8
$env:PYTHONIOENCODING = 'utf-8'
$env:PYTHONUTF8 = '1'
$env:PYTHONSAFEPATH = '1'

function ConvertTo-WindowsArgument([string]$arg) {
    # The inverse of the MSVC runtime's parsing (and of CommandLineToArgvW).
    if ($arg.Length -gt 0 -and $arg -notmatch '[\s"]') { return $arg }
    $sb = New-Object System.Text.StringBuilder
    [void]$sb.Append('"')
    $backslashes = 0
    foreach ($c in $arg.ToCharArray()) {
        if ($c -eq '\') { $backslashes++; continue }
        if ($c -eq '"') {
            [void]$sb.Append([char]'\', 2 * $backslashes + 1)
        } elseif ($backslashes -gt 0) {
            [void]$sb.Append([char]'\', $backslashes)
        }
        $backslashes = 0
        [void]$sb.Append($c)
    }
    [void]$sb.Append([char]'\', 2 * $backslashes)
    [void]$sb.Append('"')
    return $sb.ToString()
}

function Invoke-Native([string]$file, [string[]]$arguments) {
    # Runs $file with $arguments, passes its stdout through unchanged, returns its exit code.
    $psi = New-Object System.Diagnostics.ProcessStartInfo
    $psi.FileName = $file
    $psi.Arguments = (@($arguments) | ForEach-Object { ConvertTo-WindowsArgument $_ }) -join ' '
    $psi.UseShellExecute = $false
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardError = $false
    $psi.CreateNoWindow = $true
    $process = [System.Diagnostics.Process]::Start($psi)
    $stdout = [Console]::OpenStandardOutput()
    $process.StandardOutput.BaseStream.CopyTo($stdout)
    $stdout.Flush()
    $process.WaitForExit()
    return $process.ExitCode
}

function Test-HasPackage([string]$python, [string[]]$prefix = @()) {
    $psi = New-Object System.Diagnostics.ProcessStartInfo
    $psi.FileName = $python
    $psi.Arguments = ((@($prefix) + @('-c')) -join ' ') + ' "import importlib.metadata as m; m.distribution(''prtg-roundtrip'')"'
    $psi.UseShellExecute = $false
    $psi.CreateNoWindow = $true
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardError = $true
    $psi.WorkingDirectory = $env:SystemRoot
    try {
        $process = [System.Diagnostics.Process]::Start($psi)
        [void]$process.StandardOutput.ReadToEnd()
        [void]$process.StandardError.ReadToEnd()
        $process.WaitForExit()
        return $process.ExitCode -eq 0
    } catch {
        return $false
    }
}

function Write-Raw([string]$text) {
    $bytes = $utf8.GetBytes($text + "`r`n")
    $stdout = [Console]::OpenStandardOutput()
    $stdout.Write($bytes, 0, $bytes.Length)
    $stdout.Flush()
}

$sensorArgs = @($args | ForEach-Object { [string]$_ })

# The document format for any error, read as the package reads it: the first known --format
# value; without arguments (Script v2 passes the parameters on stdin), Script v2's.
$format = 'prtg-xml'
if ($sensorArgs.Count -eq 0) { $format = 'script-v2' }
for ($i = 0; $i -lt $sensorArgs.Count; $i++) {
    $value = $null
    if ($sensorArgs[$i] -eq '--format' -and $i + 1 -lt $sensorArgs.Count) { $value = $sensorArgs[$i + 1] }
    elseif ($sensorArgs[$i].StartsWith('--format=')) { $value = $sensorArgs[$i].Substring(9) }
    if (@('prtg-xml', 'prtg-json', 'script-v2', 'text') -contains $value) { $format = $value; break }
}

function Write-ErrorDocument([string]$message) {
    # Prints one error document in $format; returns the exit code (0, or 1 for text).
    if ($message.Length -gt 2000) { $message = $message.Substring(0, 2000) }
    $json = $message.Replace('\', '\\').Replace('"', '\"').Replace("`r", '\r').Replace("`n", '\n').Replace("`t", '\t')
    switch ($format) {
        'prtg-json' { Write-Raw ('{"prtg": {"error": 1, "text": "' + $json + '"}}'); return 0 }
        'script-v2' { Write-Raw ('{"version": 2, "status": "error", "message": "' + $json + '"}'); return 0 }
        'text' { Write-Raw $message; return 1 }
        default {
            $xml = [System.Security.SecurityElement]::Escape($message)
            Write-Raw ('<?xml version="1.0" encoding="UTF-8"?><prtg><error>1</error><text>' + $xml + '</text></prtg>')
            return 0
        }
    }
}

# Whatever goes wrong in here (a broken interpreter, a policy), PRTG gets a document, not silence.
trap { exit (Write-ErrorDocument "prtg-roundtrip launcher (PowerShell): $($_.Exception.Message)") }

$here = $PSScriptRoot
if (-not $here) { $here = Split-Path -Parent $MyInvocation.MyCommand.Path }
$looked = New-Object System.Collections.Generic.List[string]
$python = $null
$pythonPrefix = @()
$usePyz = $false
$exe = $null

if ($env:PRTG_ROUNDTRIP_PYTHON) {
    $candidate = $env:PRTG_ROUNDTRIP_PYTHON.Trim('"')
    if (Test-Path -LiteralPath $candidate -PathType Leaf) {
        $python = $candidate
        $pyz = Join-Path $here 'prtg-roundtrip.pyz'
        if ((Test-Path -LiteralPath $pyz -PathType Leaf) -and -not (Test-HasPackage $candidate)) { $usePyz = $true }
    } else {
        $looked.Add("PRTG_ROUNDTRIP_PYTHON=$candidate (no such file; it overrides all other places)")
    }
} else {
    foreach ($venv in @('.venv', 'prtg-roundtrip-venv')) {
        $candidate = Join-Path (Join-Path (Join-Path $here $venv) 'Scripts') 'python.exe'
        if (Test-Path -LiteralPath $candidate -PathType Leaf) { $python = $candidate; break }
        $looked.Add($candidate)
    }
    if (-not $python) {
        $command = Get-Command 'prtg-roundtrip.exe' -CommandType Application -ErrorAction SilentlyContinue |
            Select-Object -First 1
        if ($command) { $exe = $command.Path } else { $looked.Add('prtg-roundtrip.exe on PATH') }
    }
    if (-not $python -and -not $exe) {
        # Each candidate: the interpreter, and what goes before the arguments for it (py.exe: -3).
        $candidates = New-Object System.Collections.Generic.List[object]
        $candidates.Add(@([System.IO.Path]::GetFullPath((Join-Path $here '..\..\python\python.exe')), @()))
        foreach ($key in @('HKLM:\SOFTWARE\WOW6432Node\Paessler\PRTG Network Monitor',
                           'HKLM:\SOFTWARE\Paessler\PRTG Network Monitor')) {
            $registered = $null
            try { $registered = (Get-ItemProperty -LiteralPath $key -Name 'exepath' -ErrorAction Stop).exepath } catch { }
            if ($registered) {
                $candidates.Add(@((Join-Path $registered.TrimEnd('\') 'python\python.exe'), @()))
                break
            }
        }
        if (${env:ProgramFiles(x86)}) {
            $candidates.Add(@((Join-Path ${env:ProgramFiles(x86)} 'PRTG Network Monitor\python\python.exe'), @()))
        }
        if ($env:ProgramFiles) { $candidates.Add(@((Join-Path $env:ProgramFiles 'PRTG Network Monitor\python\python.exe'), @())) }
        foreach ($name in @('py.exe', 'python.exe')) {
            $found = Get-Command $name -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
            $prefix = @()
            if ($name -eq 'py.exe') { $prefix = @('-3') }
            if ($found) { $candidates.Add(@($found.Path, $prefix)) } else { $looked.Add("$name on PATH") }
        }
        $pyz = Join-Path $here 'prtg-roundtrip.pyz'
        foreach ($candidate in $candidates) {
            $path = $candidate[0]
            $prefix = @($candidate[1])
            if (-not (Test-Path -LiteralPath $path -PathType Leaf)) { $looked.Add($path); continue }
            if (Test-HasPackage $path $prefix) { $python = $path; $pythonPrefix = $prefix; break }
            if (Test-Path -LiteralPath $pyz -PathType Leaf) { $python = $path; $pythonPrefix = $prefix; $usePyz = $true; break }
            $looked.Add("$path (prtg-roundtrip is not installed in it)")
        }
    }
}

if ($python -and $usePyz) { exit (Invoke-Native $python (@($pythonPrefix) + @('-S', (Join-Path $here 'prtg-roundtrip.pyz')) + $sensorArgs)) }
if ($python) { exit (Invoke-Native $python (@($pythonPrefix) + @('-m', 'prtg_roundtrip') + $sensorArgs)) }
if ($exe) { exit (Invoke-Native $exe $sensorArgs) }

$message = "prtg-roundtrip launcher: no Python found (looked in: $($looked -join '; ')). " +
    "Put prtg-roundtrip.pyz next to this launcher (it runs with PRTG's own Python or any Python 3.9+), or install prtg-roundtrip into a virtual environment next to this launcher " +
    "($(Join-Path $here 'prtg-roundtrip-venv'), e.g. offline from the bundle: python -m venv prtg-roundtrip-venv, " +
    "then prtg-roundtrip-venv\Scripts\python.exe -m pip install --no-index --find-links wheels prtg-roundtrip), " +
    "or set PRTG_ROUNDTRIP_PYTHON. See docs\launchers.md."
exit (Write-ErrorDocument $message)
