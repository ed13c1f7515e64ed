; Inno Setup 6 script: the Deploy Console agent setup for managed devices.
;
; Compiled by build_installer.py, which passes:
;   /DAppVersion=0.1.0  /DSourceDir=<dist>\deploy-agent
; Mass roll-out (Group Policy, or the console itself):
;   deploy-agent-<version>-setup.exe /VERYSILENT /SUPPRESSMSGBOXES /NORESTART
;       /SERVER=http://console-host:8765 /TOKEN=<enrollment token>
; What it does: installs the frozen agent into Program Files, writes the server
; address and token to a config file only SYSTEM and Administrators can read, and
; registers the agent as the Windows service "DeployAgent" (LocalSystem, starts at
; boot, restarted on failure). Running a newer setup upgrades in place: same AppId,
; the service is stopped before files are replaced and started again after; the
; existing config is kept unless /SERVER= or /TOKEN= are given.
;
; The service runs:  deploy-agent.exe --service --config <config> --state-dir <dir>
; `--config` reads the INI this setup writes (section [agent], keys server, token);
; `--service` hands the process to the service dispatcher (agent/winservice.py).
; TODO(installer): neither has run on Windows here (no Windows machine, no ISCC).

#ifndef AppVersion
  #error Pass /DAppVersion=<version> (build_installer.py does)
#endif
#ifndef SourceDir
  #error Pass /DSourceDir=<folder of the frozen deploy-agent bundle>
#endif

#define AppName "Deploy Console Agent"
#define AppExe "deploy-agent.exe"
#define ServiceName "DeployAgent"
#define DataDir "{commonappdata}\DeployConsole\agent"
#define ConfigFile DataDir + "\agent.ini"

[Setup]
; Never change AppId: it is how a newer setup finds and upgrades an installed agent.
AppId={{A7F2D9E4-31C8-4B6E-8D0F-6C5B2E9A4F17}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=Deploy Console project
VersionInfoVersion={#AppVersion}
DefaultDirName={autopf}\Deploy Console Agent
DisableDirPage=auto
DisableProgramGroupPage=yes
CreateUninstallRegKey=yes
UninstallDisplayIcon={app}\{#AppExe}
PrivilegesRequired=admin
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
; The service is stopped by PrepareToInstall below; the Restart Manager must not
; try to close it (or ask the user to) on an unattended device.
CloseApplications=no
RestartIfNeededByRun=no

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[InstallDelete]
; Files of an older version that this one no longer ships must not linger.
Type: filesandordirs; Name: "{app}\_internal"

[Dirs]
Name: "{#DataDir}"; Flags: uninsneveruninstall

[UninstallDelete]
; The agent's id, jobs and logs stay for a reinstall; only the config goes.
Type: files; Name: "{#ConfigFile}"

[Code]
const
  ServiceName = '{#ServiceName}';
  ServiceDisplayName = 'Deploy Console Agent';
  ServiceDescription = 'Receives deployments from Deploy Console and installs software on this device.';
  ERROR_SERVICE_DOES_NOT_EXIST = 1060;

var
  ServerPage: TInputQueryWizardPage;

{ --- running the Windows tools ---------------------------------------------- }

function RunTool(const Tool, Params: String): Integer;
var
  ToolExitCode: Integer;
begin
  Log(Format('Running %s %s', [Tool, Params]));
  if not Exec(ExpandConstant('{sys}\') + Tool, Params, '', SW_HIDE,
              ewWaitUntilTerminated, ToolExitCode) then
    ToolExitCode := -1;
  Log(Format('%s exited with %d', [Tool, ToolExitCode]));
  Result := ToolExitCode;
end;

function ServiceExists(): Boolean;
begin
  Result := RunTool('sc.exe', 'query ' + ServiceName) <> ERROR_SERVICE_DOES_NOT_EXIST;
end;

procedure StopService();
begin
  { net stop waits until the service has stopped, unlike sc stop. }
  if ServiceExists() then
    RunTool('net.exe', 'stop ' + ServiceName);
end;

function ServiceCommandLine(): String;
begin
  { sc.exe wants binPath= as one argument: the inner quotes are escaped with \. }
  Result := '\"' + ExpandConstant('{app}\{#AppExe}') + '\" --service'
    + ' --config \"' + ExpandConstant('{#ConfigFile}') + '\"'
    + ' --state-dir \"' + ExpandConstant('{#DataDir}') + '\"';
end;

procedure RegisterService();
var
  Verb: String;
begin
  if ServiceExists() then
    Verb := 'config'
  else
    Verb := 'create';
  RunTool('sc.exe', Verb + ' ' + ServiceName + ' binPath= "' + ServiceCommandLine()
    + '" start= delayed-auto obj= LocalSystem DisplayName= "' + ServiceDisplayName + '"');
  RunTool('sc.exe', 'description ' + ServiceName + ' "' + ServiceDescription + '"');
  { Restart after 5 s, 30 s, then every 60 s; the count resets after a quiet day.
    failureflag 1: also when the agent exits with an error, not only on a crash. }
  RunTool('sc.exe', 'failure ' + ServiceName
    + ' reset= 86400 actions= restart/5000/restart/30000/restart/60000');
  RunTool('sc.exe', 'failureflag ' + ServiceName + ' 1');
end;

{ --- the config file ------------------------------------------------------- }

function ConfigValue(const Key, Param: String): String;
begin
  { The setup's parameter wins; an upgrade without it keeps what is there. }
  Result := ExpandConstant('{param:' + Param + '|}');
  if Result = '' then
    Result := GetIniString('agent', Key, '', ExpandConstant('{#ConfigFile}'));
end;

procedure WriteConfig();
var
  ConfigFile: String;
begin
  ConfigFile := ExpandConstant('{#ConfigFile}');
  SetIniString('agent', 'server', Trim(ServerPage.Values[0]), ConfigFile);
  SetIniString('agent', 'token', Trim(ServerPage.Values[1]), ConfigFile);
  { Only SYSTEM (S-1-5-18) and Administrators (S-1-5-32-544) may read the token. }
  RunTool('icacls.exe', '"' + ExpandConstant('{#DataDir}')
    + '" /inheritance:r /grant:r *S-1-5-18:(OI)(CI)F *S-1-5-32-544:(OI)(CI)F');
end;

{ --- setup events ------------------------------------------------------------ }

procedure InitializeWizard();
begin
  ServerPage := CreateInputQueryPage(wpSelectDir,
    'Deploy Console server', 'Which console should this agent report to?',
    'Copy both values from the console''s Settings dialog.');
  ServerPage.Add('Server address (for example http://console-host:8765):', False);
  ServerPage.Add('Enrollment token:', True);
  ServerPage.Values[0] := ConfigValue('server', 'SERVER');
  ServerPage.Values[1] := ConfigValue('token', 'TOKEN');
end;

function NextButtonClick(CurPageID: Integer): Boolean;
begin
  Result := True;
  if (CurPageID = ServerPage.ID)
     and ((Trim(ServerPage.Values[0]) = '') or (Trim(ServerPage.Values[1]) = '')) then
  begin
    MsgBox('Enter both the server address and the enrollment token.', mbError, MB_OK);
    Result := False;
  end;
end;

function PrepareToInstall(var NeedsRestart: Boolean): String;
begin
  Result := '';
  { Silent installs skip the wizard page, so check the values here too. }
  if (Trim(ServerPage.Values[0]) = '') or (Trim(ServerPage.Values[1]) = '') then
  begin
    Result := 'No server address or enrollment token: pass /SERVER= and /TOKEN=.';
    Exit;
  end;
  StopService();
end;

procedure CurStepChanged(CurStep: TSetupStep);
begin
  if CurStep = ssPostInstall then
  begin
    WriteConfig();
    RegisterService();
    RunTool('net.exe', 'start ' + ServiceName);
  end;
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
begin
  if CurUninstallStep = usUninstall then
  begin
    StopService();
    RunTool('sc.exe', 'delete ' + ServiceName);
  end;
end;
