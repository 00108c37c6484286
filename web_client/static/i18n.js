// Huizhen web client: every user-visible string, in Simplified Chinese and English.
//
// The language comes from a stored choice (the toggle button), else from navigator.language
// (zh, zh-CN, zh-TW, … → Chinese; anything else → English).
// Placeholders look like {name} and are filled by t(key, {name: …}).

const STRINGS = {
  en: {
    app_name: 'Huizhen',
    page_title: 'Video consultation · Huizhen',
    lang_toggle: '中文',
    lang_toggle_label: '切换到中文 (Switch to Chinese)',

    status_idle: 'Starting…',
    status_media: 'Waiting for camera and microphone…',
    status_connecting: 'Connecting…',
    status_joining: 'Joining…',
    status_joined: 'Connected',
    status_reconnecting: 'Reconnecting…',
    status_left: 'Left',
    status_ended: 'Ended',
    status_failed: 'Not connected',

    mic_mute: 'Mute',
    mic_unmute: 'Unmute',
    mic_mute_label: 'Mute microphone',
    mic_unmute_label: 'Unmute microphone',
    mic_none: 'No mic',
    mic_none_label: 'Microphone not available',
    cam_off: 'Stop video',
    cam_on: 'Start video',
    cam_off_label: 'Turn camera off',
    cam_on_label: 'Turn camera on',
    cam_none: 'No camera',
    cam_none_label: 'Camera not available',
    flip: 'Flip',
    flip_label: 'Switch between front and back camera',
    leave: 'Leave',
    leave_label: 'Leave the consultation',
    rejoin: 'Rejoin',
    rejoin_label: 'Join the consultation again',
    dismiss_label: 'Close message',
    sound_on: 'Tap to turn on sound',
    controls_label: 'Call controls',
    tiles_label: 'Participants',

    you: 'You',
    waiting_others: 'Waiting for others to join…',
    waiting_lobby: 'Please wait. The clinic will let you in shortly.',
    mic_muted_badge: 'Microphone off',
    cam_off_badge: 'Camera off',
    tile_label: '{name}, {role}',
    announce_joined: '{name} joined',
    announce_left: '{name} left',

    role_host: 'Host',
    role_doctor: 'Doctor',
    role_specialist: 'Specialist',
    role_nurse: 'Nurse',
    role_interpreter: 'Interpreter',
    role_patient: 'Patient',
    role_guardian: 'Guardian',
    role_presenter: 'Presenter',
    role_moderator: 'Moderator',
    role_viewer: 'Viewer',

    link_incomplete: 'This link is incomplete. Ask for a new link.',
    media_denied:
      'Camera and microphone are blocked. You can still see and hear the others. ' +
      'To be seen and heard, allow access in your browser settings and reload the page.',
    media_missing: 'No camera or microphone was found. You can still see and hear the others.',
    media_busy:
      'Your camera or microphone is being used by another app. ' +
      'You can still see and hear the others.',
    media_insecure:
      'This page cannot use the camera or microphone (the connection is not secure). ' +
      'You can still see and hear the others.',
    media_partial_video: 'Your camera could not be started. Others can hear you but not see you.',
    media_partial_audio: 'Your microphone could not be started. Others can see you but not hear you.',
    camera_stopped: 'Your camera stopped working.',
    mic_stopped: 'Your microphone stopped working.',
    flip_failed: 'Could not switch camera.',
    publish_failed: 'Your camera and microphone could not be sent. Others cannot see or hear you.',
    ended: 'The consultation has ended.',
    left: 'You left the consultation.',
    replaced: 'You joined from another tab or device, so this window was disconnected.',
    disconnected: 'You were disconnected from the consultation.',
    connection_lost: 'Connection lost. Trying to reconnect…',
    connection_failed: 'Could not connect. Check your network, then tap Rejoin.',
    media_connection_failed: 'The video connection failed. Reconnecting…',
    browser_unsupported:
      'This browser cannot make video calls. Please use a recent Chrome, Edge, Firefox or Safari.',
    error_generic: 'Something went wrong.',

    // server error codes (docs/protocol.md) that deserve plain words
    error_token_missing: 'This link is incomplete. Ask for a new link.',
    error_token_malformed: 'This link is not valid. Ask the clinic for a new link.',
    error_token_algorithm: 'This link is not valid. Ask the clinic for a new link.',
    error_token_unknown_key: 'This link is not valid. Ask the clinic for a new link.',
    error_token_signature: 'This link is not valid. Ask the clinic for a new link.',
    error_token_audience: 'This link is not valid. Ask the clinic for a new link.',
    error_token_claims: 'This link is not valid. Ask the clinic for a new link.',
    error_token_expired: 'This link has expired. Ask the clinic for a new link.',
    action_make_host: 'Make host',
    make_host_confirm: 'Make {name} the host? You take their role and they run the consultation.',
    make_host_confirm_yes: 'Make host',
    role_now: 'You are now: {role}',
    error_too_early: 'This consultation has not opened yet. Please open the link again closer to your appointment time.',
    error_invite_used:
      'This invite link has already been used by someone else. Ask the person who invited you for a new link.',
    error_device_required: 'Open this link in your browser.',
    error_token_not_yet_valid:
      'This link is not active yet. Please open it again at your appointment time.',
    error_token_wrong_room: 'This link is for a different consultation. Ask the clinic for a new link.',
    error_token_role: 'This link does not allow you to join this consultation. Ask the clinic for a new link.',
    error_room_not_found: 'This consultation could not be found. Check the link or ask the clinic.',
    error_room_ended: 'The consultation has ended.',
    error_room_full: 'This consultation is full. Please try again later or contact the clinic.',
    error_unsupported_version: 'This page is out of date. Please reload it.',

    status_precheck: 'Checking before you join',
    status_lobby: 'Waiting to be let in',
    status_held: 'On hold',
    recording: 'REC',
    recording_label: 'This consultation is being recorded',
    care: 'Large',
    care_label: 'Large text and buttons',
    quality_good: 'Connection: good',
    quality_fair: 'Connection: fair',
    quality_poor: 'Connection: poor',
    quality_unknown: 'Connection: checking',
    quality_detail: 'delay {rtt} ms, loss {loss}%',
    subject_now: 'Now discussing: {label}',
    subject_cleared: 'No particular patient under discussion now',

    pc_title: 'Before you join',
    pc_lead: 'A quick check of your camera, microphone, sound and connection.',
    pc_no_preview: 'No camera picture',
    pc_camera: 'Camera',
    pc_camera_waiting: 'Waiting for the camera… If asked, tap "Allow".',
    pc_camera_ok: 'Your camera works. This is what the doctor will see.',
    pc_camera_none: 'No camera found. The doctor will not see you, but can hear you.',
    pc_camera_denied: 'The camera is blocked. Allow it in your browser settings, then reload.',
    pc_camera_busy: 'The camera is being used by another app. Close it, then reload.',
    pc_insecure: 'This page cannot use the camera or microphone (the connection is not secure).',
    pc_mic: 'Microphone',
    pc_mic_meter_label: 'Microphone level',
    pc_mic_waiting: 'Waiting for the microphone…',
    pc_mic_speak: 'Say something: the green bar should move.',
    pc_mic_tap: 'Tap the screen once, then say something: the green bar should move.',
    pc_mic_ok: 'We can hear you.',
    pc_mic_none: 'No microphone found. The doctor will not hear you.',
    pc_mic_denied: 'The microphone is blocked. Allow it in your browser settings, then reload.',
    pc_mic_busy: 'The microphone is being used by another app. Close it, then reload.',
    pc_speaker: 'Sound',
    pc_speaker_play: 'Play a test sound',
    pc_speaker_hint: 'Tap the button and listen.',
    pc_speaker_playing: 'Playing…',
    pc_speaker_question: 'Did you hear the sound?',
    pc_speaker_ok: 'Your sound works.',
    pc_speaker_not_heard:
      'Turn the volume up and check that the phone is not on silent, then try again.',
    pc_speaker_unavailable: 'This browser cannot play the test sound.',
    pc_heard: 'Yes, I heard it',
    pc_not_heard: 'No',
    pc_network: 'Connection',
    pc_net_checking: 'Checking your connection…',
    pc_net_good: 'Your connection is good',
    pc_net_weak: 'Your connection may be weak; video may pause',
    pc_net_unreachable: 'Cannot reach the clinic. Check Wi-Fi or mobile data.',
    pc_retry: 'Check again',
    join: 'Join consultation',

    lobby_wait: 'Please wait, the doctor will let you in',
    lobby_hint: 'Keep this page open. You will join automatically.',
    hold_title: 'The doctor has put you on hold; please wait',
    hold_hint: 'You will be back in the consultation automatically.',

    chat: 'Chat',
    chat_title: 'Messages',
    chat_label: 'Messages',
    chat_label_unread: 'Messages, {n} unread',
    chat_close_label: 'Close messages',
    chat_empty: 'No messages yet.',
    chat_input_label: 'Message',
    chat_placeholder: 'Type a message',
    chat_send_label: 'Send message',
    chat_announce: 'New message from {name}',
    chat_offline: 'Not connected: the message was not sent.',

    screen_start: 'Share screen',
    screen_stop: 'Stop sharing',
    screen_start_label: 'Share your screen',
    screen_stop_label: 'Stop sharing your screen',
    screen_failed: 'Your screen could not be shared.',

    more: 'More',
    more_label: 'More options',
    invite: 'Invite',
    invite_label: 'Invite someone to this consultation',
    end: 'End for all',
    end_label: 'End consultation for everyone',
    end_confirm: 'End the consultation for everyone? Everybody will be disconnected.',
    end_confirm_yes: 'End for everyone',
    cancel: 'Cancel',
    close: 'Close',
    invite_title: 'Invite someone',
    invite_role: 'Role',
    invite_name: 'Name (optional)',
    invite_create: 'Create link',
    invite_link: 'Link to send',
    invite_expires: 'For a {role}. Works until {time}.',
    invite_failed: 'The link could not be created. {reason}',
    copy: 'Copy link',
    copied: 'Copied.',
    copy_manual: 'Select the link and copy it.',

    lobby_list_title: 'Waiting to join ({n})',
    admit: 'Admit',
    admit_label: 'Let {name} in',
    deny: 'Deny',
    deny_label: 'Do not let {name} in',
    announce_lobby: '{name} is waiting to join',
    tile_held: 'On hold',
    tile_video_paused: 'Video paused: weak network',
    tile_menu_label: 'Options for {name}',
    action_hold: 'Put on hold',
    action_resume: 'Resume',
    action_mute: 'Mute microphone',
    action_remove: 'Remove from call',
    remove_confirm: 'Remove {name} from the consultation? They cannot come back with the same link.',
    remove_confirm_yes: 'Remove',
    muted_by_host_audio: 'The doctor muted your microphone. Tap Unmute to speak.',
    muted_by_host_video: 'The doctor turned your camera off.',
    denied: 'The doctor did not let you into this consultation. Please contact the clinic.',
    removed: 'The doctor removed you from the consultation.',
    error_not_admitted: 'Please wait until the doctor lets you in.',
    error_removed: 'The doctor removed you from this consultation.',
    error_denied: 'The doctor did not let you into this consultation. Please contact the clinic.',
    error_link_incomplete: 'This link is incomplete. Ask for a new link.',
    error_browser_unsupported:
      'This browser cannot make video calls. Please use a recent Chrome, Edge, Firefox or Safari.',

    // recording and consent (docs/protocol.md, "Recording and consent")
    recording_paused: 'Paused',
    recording_paused_label: 'The recording of this consultation is paused',
    not_recorded: 'Not recorded',
    not_recorded_label: 'This consultation is not being recorded',
    rec_started: 'This consultation is now being recorded, with the patient\'s consent.',
    rec_started_override:
      'This consultation is now being recorded. The doctor started the recording without ' +
      'the patient\'s consent and documented the reason.',
    rec_ongoing: 'This consultation is being recorded, with the patient\'s consent.',
    rec_ongoing_override:
      'This consultation is being recorded. The doctor started the recording without the ' +
      'patient\'s consent and documented the reason.',
    rec_paused: 'The recording is paused.',
    rec_resumed: 'The recording has resumed.',
    rec_stopped: 'The recording has stopped.',
    rec_stopped_consent_withdrawn: 'The recording has stopped: the patient withdrew consent.',
    rec_stopped_server_shutdown: 'The recording has stopped because the service is restarting.',
    consent_title: '{name} asks to record this consultation.',
    consent_title_anon: 'The doctor asks to record this consultation.',
    consent_text:
      'The recording goes into your medical record; only your care team and you can watch it.',
    consent_can_refuse: 'You can say no: your care does not change.',
    consent_yes: 'Yes, record it',
    consent_no: 'No, do not record',
    consent_thanks_yes: 'Thank you. You agreed to recording.',
    consent_thanks_no: 'You said no. This consultation will not be recorded. Your care does not change.',
    consent_given_patient: 'The patient agreed to recording.',
    consent_given_guardian: 'The guardian agreed to recording.',
    consent_refused_patient: 'The patient declined recording.',
    consent_refused_guardian: 'The guardian declined recording.',
    record: 'Record',
    record_label: 'Start recording ({status})',
    record_stop: 'Stop recording',
    record_stop_label: 'Stop recording ({status})',
    record_pause: 'Pause',
    record_pause_label: 'Pause the recording',
    record_resume: 'Resume',
    record_resume_label: 'Resume the recording',
    rec_consent_granted_patient: 'Patient agreed',
    rec_consent_granted_guardian: 'Guardian agreed',
    rec_consent_declined_patient: 'Patient declined',
    rec_consent_declined_guardian: 'Guardian declined',
    rec_consent_asked: 'Waiting for answer',
    rec_consent_none: 'Patient not asked',
    rec_dialog_title_none: 'The patient has not agreed to recording.',
    rec_dialog_title_declined: 'The patient declined recording.',
    rec_dialog_text:
      'Ask the patient first: they answer on their screen. Recording without consent needs a ' +
      'reason, which is logged.',
    rec_ask: 'Ask the patient',
    rec_override: 'Record anyway…',
    rec_override_title: 'Record without the patient\'s consent',
    rec_reason: 'Reason (at least 5 characters)',
    rec_reason_hint:
      'The reason is logged with the recording, under your name, and the patient is told ' +
      'that you started it with a documented reason.',
    rec_reason_short: 'Please give a reason of at least 5 characters.',
    rec_override_start: 'Start recording',
    back: 'Back',
    rec_asked: 'The patient has been asked. Recording starts when they agree.',
    rec_auto_started: 'The patient agreed. Starting the recording…',
    error_no_patient: 'No patient or guardian is in the consultation to ask.',
    error_recording_active: 'The consultation is being recorded already.',
    error_not_recording: 'The consultation is not being recorded.',
    error_no_consent_request: 'Nobody has asked you about recording (any more).',
    error_consent_required: 'The patient has not agreed to recording.',

    // ---- the patient's record (records.html)
    records_page_title: 'My record · Huizhen',
    records_title: 'My visits',
    records_title_clinician: "Patients' records",
    records_title_of: 'Record of {patient}',
    records_loading: 'Loading your record…',
    records_retry: 'Try again',
    records_show_all: 'All visits I may see',
    records_close_player: 'Close the video',
    records_lookup_title: "Open a patient's record",
    records_lookup_patient: 'Patient reference',
    records_lookup_reason: 'Why you open it (kept in the audit log)',
    records_lookup_open: 'Open',
    records_no_link_title: 'This page needs your link',
    records_no_link:
      'Open the link to your record that the hospital sent you (text message, WeChat or the patient portal).',
    records_ask_hospital: 'If it still does not work, ask the hospital for a new link.',
    records_link_title: 'This link does not work',
    records_forbidden_title: 'No access to this record',
    records_forbidden:
      "This link is for another person's record, or your role may not open it, so nothing is shown.",
    records_forbidden_help:
      'If you think this is wrong, contact the hospital. Every attempt to open a record is logged.',
    records_reason_required:
      'To open a record outside your own visits, say why (at least 5 characters). It is logged.',
    records_not_found_title: 'Visit not found',
    records_not_found: 'This visit is not in the record.',
    records_network_title: 'No connection',
    records_network: "Cannot reach the hospital's server. Check your internet connection and try again.",
    records_generic_title: 'Something went wrong',
    records_none: 'There are no visits in your record yet.',
    records_none_patient: "There are no visits in this patient's record.",
    records_segment: "this patient's part",
    records_clinicians: 'Clinicians',
    records_duration: 'Duration',
    records_patient: 'Patient',
    records_in_progress: 'in progress',
    records_minutes: '{n} min',
    records_under_a_minute: 'under a minute',
    records_not_recorded: 'This visit was not recorded.',
    records_purged: 'The recording was deleted under the retention rules.',
    records_preparing: 'The recording is being prepared. Please come back later.',
    records_recording_failed: 'The recording cannot be played. Please contact the hospital.',
    records_play: 'Play the recording',
    records_play_n: 'Play recording {n}',
    records_opening: 'Opening the recording…',
    records_play_failed: 'The recording cannot be played now. Please try again later.',
    kind_clinic: 'Video clinic',
    kind_joint_clinic: 'Joint clinic',
    kind_ward_round: 'Ward round',
    kind_mdt: 'MDT meeting',
    kind_broadcast: 'Teaching broadcast',
  },

  zh: {
    app_name: '会诊',
    page_title: '视频会诊 · 会诊 Huizhen',
    lang_toggle: 'English',
    lang_toggle_label: 'Switch to English (切换到英文)',

    status_idle: '正在启动…',
    status_media: '正在等待摄像头和麦克风…',
    status_connecting: '正在连接…',
    status_joining: '正在加入…',
    status_joined: '已连接',
    status_reconnecting: '正在重新连接…',
    status_left: '已离开',
    status_ended: '已结束',
    status_failed: '未连接',

    mic_mute: '静音',
    mic_unmute: '取消静音',
    mic_mute_label: '关闭麦克风',
    mic_unmute_label: '打开麦克风',
    mic_none: '无麦克风',
    mic_none_label: '麦克风不可用',
    cam_off: '关闭视频',
    cam_on: '开启视频',
    cam_off_label: '关闭摄像头',
    cam_on_label: '打开摄像头',
    cam_none: '无摄像头',
    cam_none_label: '摄像头不可用',
    flip: '翻转',
    flip_label: '切换前置或后置摄像头',
    leave: '离开',
    leave_label: '离开会诊',
    rejoin: '重新加入',
    rejoin_label: '重新加入会诊',
    dismiss_label: '关闭提示',
    sound_on: '点按以开启声音',
    controls_label: '通话控制',
    tiles_label: '参与者',

    you: '我',
    waiting_others: '正在等待其他人加入…',
    waiting_lobby: '请稍候，诊室马上会让您进入。',
    mic_muted_badge: '麦克风已关闭',
    cam_off_badge: '摄像头已关闭',
    tile_label: '{name}，{role}',
    announce_joined: '{name} 已加入',
    announce_left: '{name} 已离开',

    role_host: '主持人',
    role_doctor: '医生',
    role_specialist: '专家',
    role_nurse: '护士',
    role_interpreter: '翻译',
    role_patient: '患者',
    role_guardian: '监护人',
    role_presenter: '报告人',
    role_moderator: '主持人',
    role_viewer: '旁听',

    link_incomplete: '此链接不完整，请索取新的链接。',
    media_denied:
      '摄像头和麦克风的使用权限被拒绝。您仍可以看到和听到其他人。' +
      '如需让对方看到和听到您，请在浏览器设置中允许访问，然后刷新页面。',
    media_missing: '未找到摄像头或麦克风。您仍可以看到和听到其他人。',
    media_busy: '摄像头或麦克风正被其他应用占用。您仍可以看到和听到其他人。',
    media_insecure: '此页面无法使用摄像头或麦克风（连接不安全）。您仍可以看到和听到其他人。',
    media_partial_video: '无法启动摄像头。对方可以听到您，但看不到您。',
    media_partial_audio: '无法启动麦克风。对方可以看到您，但听不到您。',
    camera_stopped: '您的摄像头已停止工作。',
    mic_stopped: '您的麦克风已停止工作。',
    flip_failed: '无法切换摄像头。',
    publish_failed: '无法发送您的视频和声音，对方看不到也听不到您。',
    ended: '会诊已结束。',
    left: '您已离开会诊。',
    replaced: '您已在其他标签页或设备上加入，此窗口已断开。',
    disconnected: '您已与会诊断开连接。',
    connection_lost: '网络连接中断，正在尝试重新连接…',
    connection_failed: '无法连接。请检查网络，然后点按"重新加入"。',
    media_connection_failed: '视频连接失败，正在重新连接…',
    browser_unsupported: '此浏览器无法进行视频通话。请使用较新版本的 Chrome、Edge、Firefox 或 Safari。',
    error_generic: '出现了问题。',

    error_token_missing: '此链接不完整，请索取新的链接。',
    error_token_malformed: '此链接无效，请联系诊所获取新链接。',
    error_token_algorithm: '此链接无效，请联系诊所获取新链接。',
    error_token_unknown_key: '此链接无效，请联系诊所获取新链接。',
    error_token_signature: '此链接无效，请联系诊所获取新链接。',
    error_token_audience: '此链接无效，请联系诊所获取新链接。',
    error_token_claims: '此链接无效，请联系诊所获取新链接。',
    error_token_expired: '此链接已过期，请联系诊所获取新链接。',
    action_make_host: '设为主持人',
    make_host_confirm: '将{name}设为主持人？您将改为其原来的角色，由其主持会诊。',
    make_host_confirm_yes: '设为主持人',
    role_now: '您现在的身份：{role}',
    error_too_early: '本次会诊尚未开放，请在预约时间前后再打开此链接。',
    error_invite_used: '此邀请链接已被其他人使用。请联系邀请您的人获取新链接。',
    error_device_required: '请在浏览器中打开此链接。',
    error_token_not_yet_valid: '此链接尚未生效，请在预约时间再次打开。',
    error_token_wrong_room: '此链接属于另一场会诊，请联系诊所获取新链接。',
    error_token_role: '此链接不允许您加入本次会诊，请联系诊所获取新链接。',
    error_room_not_found: '找不到此会诊。请检查链接或联系诊所。',
    error_room_ended: '会诊已结束。',
    error_room_full: '本次会诊人数已满。请稍后再试或联系诊所。',
    error_unsupported_version: '此页面版本过旧，请刷新页面。',

    status_precheck: '加入前检查',
    status_lobby: '等待进入',
    status_held: '暂停中',
    recording: '录制中',
    recording_label: '本次会诊正在录制',
    care: '大字',
    care_label: '大字体和大按钮',
    quality_good: '网络：良好',
    quality_fair: '网络：一般',
    quality_poor: '网络：较差',
    quality_unknown: '网络：检测中',
    quality_detail: '延迟 {rtt} 毫秒，丢包 {loss}%',
    subject_now: '正在讨论：{label}',
    subject_cleared: '当前未讨论特定患者',

    pc_title: '加入前检查',
    pc_lead: '快速检查您的摄像头、麦克风、声音和网络。',
    pc_no_preview: '没有摄像头画面',
    pc_camera: '摄像头',
    pc_camera_waiting: '正在打开摄像头… 如有提示，请点"允许"。',
    pc_camera_ok: '摄像头正常。医生将看到这个画面。',
    pc_camera_none: '未找到摄像头。医生看不到您，但可以听到您。',
    pc_camera_denied: '摄像头被禁止使用。请在浏览器设置中允许，然后刷新页面。',
    pc_camera_busy: '摄像头正被其他应用占用。请关闭该应用后刷新页面。',
    pc_insecure: '此页面无法使用摄像头或麦克风（连接不安全）。',
    pc_mic: '麦克风',
    pc_mic_meter_label: '麦克风音量',
    pc_mic_waiting: '正在打开麦克风…',
    pc_mic_speak: '请说几句话，绿色条应该会跳动。',
    pc_mic_tap: '请先点一下屏幕，再说几句话，绿色条应该会跳动。',
    pc_mic_ok: '我们能听到您的声音。',
    pc_mic_none: '未找到麦克风。医生将听不到您。',
    pc_mic_denied: '麦克风被禁止使用。请在浏览器设置中允许，然后刷新页面。',
    pc_mic_busy: '麦克风正被其他应用占用。请关闭该应用后刷新页面。',
    pc_speaker: '声音',
    pc_speaker_play: '播放测试声音',
    pc_speaker_hint: '点按钮，听一听。',
    pc_speaker_playing: '正在播放…',
    pc_speaker_question: '您听到声音了吗？',
    pc_speaker_ok: '声音正常。',
    pc_speaker_not_heard: '请调大音量，并确认手机没有静音，然后再试一次。',
    pc_speaker_unavailable: '此浏览器无法播放测试声音。',
    pc_heard: '听到了',
    pc_not_heard: '没听到',
    pc_network: '网络',
    pc_net_checking: '正在检查网络…',
    pc_net_good: '您的网络良好',
    pc_net_weak: '您的网络可能较弱，视频可能会暂停',
    pc_net_unreachable: '无法连接到诊所。请检查 Wi-Fi 或移动数据。',
    pc_retry: '重新检查',
    join: '进入会诊',

    lobby_wait: '请稍候，医生将很快让您进入',
    lobby_hint: '请不要关闭此页面，医生同意后您将自动进入。',
    hold_title: '医生已将您暂时置于等待中，请稍候',
    hold_hint: '稍后您将自动回到会诊中。',

    chat: '聊天',
    chat_title: '消息',
    chat_label: '消息',
    chat_label_unread: '消息，{n} 条未读',
    chat_close_label: '关闭消息',
    chat_empty: '还没有消息。',
    chat_input_label: '消息',
    chat_placeholder: '输入消息',
    chat_send_label: '发送消息',
    chat_announce: '{name} 发来新消息',
    chat_offline: '未连接，消息没有发送。',

    screen_start: '共享屏幕',
    screen_stop: '停止共享',
    screen_start_label: '共享您的屏幕',
    screen_stop_label: '停止共享屏幕',
    screen_failed: '无法共享屏幕。',

    more: '更多',
    more_label: '更多选项',
    invite: '邀请',
    invite_label: '邀请他人加入本次会诊',
    end: '结束会诊',
    end_label: '为所有人结束会诊',
    end_confirm: '要为所有人结束会诊吗？所有人都将断开连接。',
    end_confirm_yes: '为所有人结束',
    cancel: '取消',
    close: '关闭',
    invite_title: '邀请他人',
    invite_role: '角色',
    invite_name: '姓名（可选）',
    invite_create: '生成链接',
    invite_link: '要发送的链接',
    invite_expires: '身份：{role}。有效期至 {time}。',
    invite_failed: '无法生成链接。{reason}',
    copy: '复制链接',
    copied: '已复制。',
    copy_manual: '请选中链接后复制。',

    lobby_list_title: '等待进入（{n}）',
    admit: '允许进入',
    admit_label: '允许 {name} 进入',
    deny: '拒绝',
    deny_label: '拒绝 {name} 进入',
    announce_lobby: '{name} 正在等待进入',
    tile_held: '暂停中',
    tile_video_paused: '网络较弱，视频已暂停',
    tile_menu_label: '{name} 的选项',
    action_hold: '暂时保留',
    action_resume: '恢复',
    action_mute: '关闭麦克风',
    action_remove: '移出会诊',
    remove_confirm: '要将 {name} 移出会诊吗？对方将无法用同一链接再次进入。',
    remove_confirm_yes: '移出',
    muted_by_host_audio: '医生关闭了您的麦克风。如需说话，请点"取消静音"。',
    muted_by_host_video: '医生关闭了您的摄像头。',
    denied: '医生没有让您进入本次会诊。请联系诊所。',
    removed: '医生已将您移出会诊。',
    error_not_admitted: '请等待医生让您进入。',
    error_removed: '医生已将您移出本次会诊。',
    error_denied: '医生没有让您进入本次会诊。请联系诊所。',
    error_link_incomplete: '此链接不完整，请索取新的链接。',
    error_browser_unsupported: '此浏览器无法进行视频通话。请使用较新版本的 Chrome、Edge、Firefox 或 Safari。',

    recording_paused: '已暂停',
    recording_paused_label: '本次会诊的录制已暂停',
    not_recorded: '未录制',
    not_recorded_label: '本次会诊没有录制',
    rec_started: '本次会诊开始录制（已征得患者同意）。',
    rec_started_override: '本次会诊开始录制。患者未同意录制，医生已开始录制并记录了原因。',
    rec_ongoing: '本次会诊正在录制（已征得患者同意）。',
    rec_ongoing_override: '本次会诊正在录制。患者未同意录制，医生已开始录制并记录了原因。',
    rec_paused: '录制已暂停。',
    rec_resumed: '录制已继续。',
    rec_stopped: '录制已停止。',
    rec_stopped_consent_withdrawn: '患者撤回了同意，录制已停止。',
    rec_stopped_server_shutdown: '服务正在重启，录制已停止。',
    consent_title: '{name}请求录制本次会诊。',
    consent_title_anon: '医生请求录制本次会诊。',
    consent_text: '录像将保存在您的病历中，只有您的医护团队和您本人可以观看。',
    consent_can_refuse: '您可以拒绝，这不会影响您的诊疗。',
    consent_yes: '同意录制',
    consent_no: '不同意',
    consent_thanks_yes: '谢谢，您已同意录制。',
    consent_thanks_no: '您已拒绝录制，本次会诊不会被录制。这不会影响您的诊疗。',
    consent_given_patient: '患者已同意录制。',
    consent_given_guardian: '监护人已同意录制。',
    consent_refused_patient: '患者拒绝了录制。',
    consent_refused_guardian: '监护人拒绝了录制。',
    record: '录制',
    record_label: '开始录制（{status}）',
    record_stop: '停止录制',
    record_stop_label: '停止录制（{status}）',
    record_pause: '暂停录制',
    record_pause_label: '暂停录制',
    record_resume: '继续录制',
    record_resume_label: '继续录制',
    rec_consent_granted_patient: '患者已同意',
    rec_consent_granted_guardian: '监护人已同意',
    rec_consent_declined_patient: '患者已拒绝',
    rec_consent_declined_guardian: '监护人已拒绝',
    rec_consent_asked: '等待患者回答',
    rec_consent_none: '尚未征求同意',
    rec_dialog_title_none: '患者尚未同意录制。',
    rec_dialog_title_declined: '患者拒绝了录制。',
    rec_dialog_text: '请先征求患者同意，患者会在自己的屏幕上回答。未经同意录制需要填写原因，原因会被记录。',
    rec_ask: '征求患者同意',
    rec_override: '仍要录制…',
    rec_override_title: '未经患者同意录制',
    rec_reason: '原因（至少 5 个字）',
    rec_reason_hint: '原因将以您的名义与录像一起记录。患者会看到：医生在未获同意的情况下开始了录制，并记录了原因。',
    rec_reason_short: '请填写至少 5 个字的原因。',
    rec_override_start: '开始录制',
    back: '返回',
    rec_asked: '已征求患者同意。患者同意后将开始录制。',
    rec_auto_started: '患者已同意，正在开始录制…',
    error_no_patient: '会诊中没有可以询问的患者或监护人。',
    error_recording_active: '本次会诊已经在录制中。',
    error_not_recording: '本次会诊没有在录制。',
    error_no_consent_request: '目前没有需要您回答的录制请求。',
    error_consent_required: '患者尚未同意录制。',

    // ---- 就诊记录 (records.html)
    records_page_title: '我的就诊记录 · 会诊',
    records_title: '我的就诊记录',
    records_title_clinician: '患者就诊记录',
    records_title_of: '{patient} 的就诊记录',
    records_loading: '正在读取您的记录…',
    records_retry: '重试',
    records_show_all: '查看我可以看的全部就诊',
    records_close_player: '关闭视频',
    records_lookup_title: '打开某位患者的记录',
    records_lookup_patient: '患者编号',
    records_lookup_reason: '打开原因（将记入审计日志）',
    records_lookup_open: '打开',
    records_no_link_title: '请使用医院发给您的链接',
    records_no_link: '请打开医院发给您的就诊记录链接（短信、微信或患者服务平台）。',
    records_ask_hospital: '如果仍然打不开，请联系医院获取新链接。',
    records_link_title: '此链接无法使用',
    records_forbidden_title: '无权查看此记录',
    records_forbidden: '此链接属于其他人的记录，或您的身份无权查看，因此不显示任何内容。',
    records_forbidden_help: '如果您认为有误，请联系医院。每次打开记录的尝试都会被记录。',
    records_reason_required: '打开您未参与的就诊记录时，请说明原因（至少 5 个字）。原因会被记录。',
    records_not_found_title: '未找到此次就诊',
    records_not_found: '记录中没有这次就诊。',
    records_network_title: '网络未连接',
    records_network: '无法连接医院服务器。请检查网络后重试。',
    records_generic_title: '出现问题',
    records_none: '您的记录中还没有就诊。',
    records_none_patient: '此患者的记录中没有就诊。',
    records_segment: '本患者部分',
    records_clinicians: '医生',
    records_duration: '时长',
    records_patient: '患者',
    records_in_progress: '进行中',
    records_minutes: '{n} 分钟',
    records_under_a_minute: '不到 1 分钟',
    records_not_recorded: '这次就诊没有录像。',
    records_purged: '录像已按保存期限规定删除。',
    records_preparing: '录像正在处理中，请稍后再来查看。',
    records_recording_failed: '录像暂时无法播放，请联系医院。',
    records_play: '播放录像',
    records_play_n: '播放录像 {n}',
    records_opening: '正在打开录像…',
    records_play_failed: '录像现在无法播放，请稍后再试。',
    kind_clinic: '视频门诊',
    kind_joint_clinic: '联合门诊',
    kind_ward_round: '远程查房',
    kind_mdt: '多学科会诊 (MDT)',
    kind_broadcast: '手术示教直播',
  },
};

const STORAGE_KEY = 'huizhen.lang';
const listeners = new Set();
let current = detectLanguage();

/** 'zh' or 'en': a stored choice first, then the browser's language. */
export function detectLanguage() {
  try {
    const stored = localStorage.getItem(STORAGE_KEY);
    if (stored && STRINGS[stored]) return stored;
  } catch {
    // storage disabled (private mode, sandboxed frame): fall through
  }
  const lang = (navigator.language || '').toLowerCase();
  return lang.startsWith('zh') ? 'zh' : 'en';
}

export function getLang() {
  return current;
}

/** Switch language, remember the choice and tell every listener (they re-render). */
export function setLang(lang) {
  if (!STRINGS[lang] || lang === current) return;
  current = lang;
  try {
    localStorage.setItem(STORAGE_KEY, lang);
  } catch {
    // not remembered; harmless
  }
  applyTranslations();
  for (const fn of listeners) fn(lang);
}

export function toggleLang() {
  setLang(current === 'zh' ? 'en' : 'zh');
}

/** Call fn(lang) after every language change. Returns an unsubscribe function. */
export function onLangChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

export function hasKey(key) {
  return key in STRINGS[current] || key in STRINGS.en;
}

/** The string for key in the current language (English if missing there, else the key). */
export function t(key, vars) {
  let text = STRINGS[current][key] ?? STRINGS.en[key] ?? key;
  if (vars) text = text.replace(/\{(\w+)\}/g, (m, name) => (name in vars ? String(vars[name]) : m));
  return text;
}

/** Localised role label; unknown roles are shown as sent by the server. */
export function roleLabel(role) {
  const key = `role_${role}`;
  return hasKey(key) ? t(key) : String(role || '');
}

/**
 * Plain-words text for a server error: our own wording for the codes we know
 * (token problems, room problems), else the server's `message`.
 */
export function errorText(code, message) {
  const key = `error_${code}`;
  if (code && hasKey(key)) return t(key);
  return message || t('error_generic');
}

/**
 * Fill static markup: [data-i18n] sets textContent, [data-i18n-label] sets aria-label,
 * [data-i18n-title] sets title, [data-i18n-placeholder] sets placeholder. Also sets <html lang> and the document title.
 */
export function applyTranslations(root = document) {
  document.documentElement.lang = current === 'zh' ? 'zh-CN' : 'en';
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-label]')) {
    el.setAttribute('aria-label', t(el.dataset.i18nLabel));
  }
  for (const el of root.querySelectorAll('[data-i18n-title]')) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll('[data-i18n-placeholder]')) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  if (root === document && document.body?.dataset.i18nPageTitle) {
    document.title = t(document.body.dataset.i18nPageTitle);
  }
}
